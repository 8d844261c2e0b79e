-- Notifications committed but not yet published. A row is added in the same
-- transaction as its notification and removed once the channel layer took
-- it, so a crash or a Redis outage between commit and publish loses nothing.
CREATE TABLE IF NOT EXISTS herald_outbox (
    notification_id integer NOT NULL PRIMARY KEY,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_outbox_due ON herald_outbox (next_attempt_at);
