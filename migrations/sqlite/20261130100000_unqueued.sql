-- Jobs recorded in the ledger whose queue entry is not known to exist yet:
-- a row is added in the same transaction as the ledger row (submission, or
-- `herald jobs retry`) and removed once the queue took the entry. A row
-- older than a few seconds means the push failed or its process died in
-- between: the worker queues the job again (`since` is then its claim).
CREATE TABLE IF NOT EXISTS herald_unqueued (
    job_id varchar(26) NOT NULL PRIMARY KEY,
    since datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_unqueued_since ON herald_unqueued (since);
