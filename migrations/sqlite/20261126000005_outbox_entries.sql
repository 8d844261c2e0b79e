-- The outbox keeps one row per group of notifications committed together
-- (a job batch, a scan) instead of one per notification: the ids are listed
-- in `notification_ids` (comma-separated) and `pending` counts them. After a
-- partial publish the row keeps only the ids that failed. Rows of the old
-- one-per-notification table carry over as entries of one.
DROP INDEX IF EXISTS herald_outbox_due;
ALTER TABLE herald_outbox RENAME TO herald_outbox_rows;
CREATE TABLE herald_outbox (
    id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    notification_ids text NOT NULL,
    pending integer NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at datetime NOT NULL
);
CREATE INDEX herald_outbox_due ON herald_outbox (next_attempt_at);
INSERT INTO herald_outbox (notification_ids, pending, attempts, next_attempt_at)
    SELECT CAST(notification_id AS text), 1, attempts, next_attempt_at FROM herald_outbox_rows;
DROP TABLE herald_outbox_rows;
