-- Celery tasks sent with `ignore_result` (the message's header, from
-- `@shared_task(ignore_result=True)` or `apply_async(ignore_result=True)`):
-- their job's end writes no result, as under Celery. Kept from the moment
-- the ingress records the message until its job has ended; rows of jobs
-- that ended age out with the done jobs.
CREATE TABLE IF NOT EXISTS herald_celery_ignore_result (
    task_id varchar(255) NOT NULL PRIMARY KEY,
    recorded_at timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_celery_ignore_result_recorded ON herald_celery_ignore_result (recorded_at);
