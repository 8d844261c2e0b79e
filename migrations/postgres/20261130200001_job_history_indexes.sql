-- What the operations dashboard reads from the job ledger, each through an
-- index so it stays cheap on a ledger of millions of rows:
-- * counts per kind of the jobs waiting, scheduled (run_at ahead), retrying
--   and dead: a partial index holding only those rows (a done job leaves
--   it), read by an index-only scan;
-- * history by kind, newest first (ids are ULIDs: they sort by creation);
-- * history by user: the user a job's payload names (`user_id` of notify,
--   `uploaded_by` of file_attached, `changed_by` of status_changed).
-- By id and by dedup key the primary key and the unique key serve.
CREATE INDEX IF NOT EXISTS herald_jobs_open ON herald_jobs (kind, state, run_at)
    WHERE state IN ('queued', 'retrying', 'dead');
CREATE INDEX IF NOT EXISTS herald_jobs_kind ON herald_jobs (kind, id);
CREATE INDEX IF NOT EXISTS herald_jobs_user ON herald_jobs
    ((COALESCE(payload::jsonb ->> 'user_id', payload::jsonb ->> 'uploaded_by', payload::jsonb ->> 'changed_by')), id);
