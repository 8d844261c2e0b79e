-- Where each Celery task's result goes on the rpc:// result backend: the
-- caller's reply queue (the message's `reply_to` property), kept from the
-- moment the ingress takes the message until the worker has published the
-- task's end there (a countdown may wait days in between). Rows of results
-- never published (a reply queue that is gone) age out by `recorded_at`.
CREATE TABLE IF NOT EXISTS herald_celery_replies (
    task_id varchar(255) NOT NULL PRIMARY KEY,
    reply_to varchar(255) NOT NULL,
    recorded_at datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_celery_replies_recorded ON herald_celery_replies (recorded_at);
