-- What the operations dashboard reads from the job ledger, each through an
-- index so it stays cheap on a ledger of millions of rows:
-- * history by kind, newest first (ids are ULIDs: they sort by creation);
-- * history by user: the user a job's payload names (`user_id` of notify,
--   `uploaded_by` of file_attached, `changed_by` of status_changed).
-- By id and by dedup key the primary key and the unique key serve; the
-- counts per kind of the jobs waiting, scheduled, retrying and dead, and the
-- dead jobs, the state index (herald_jobs_state).
CREATE INDEX IF NOT EXISTS herald_jobs_kind ON herald_jobs (kind, id);
CREATE INDEX IF NOT EXISTS herald_jobs_user ON herald_jobs
    ((COALESCE(payload::jsonb ->> 'user_id', payload::jsonb ->> 'uploaded_by', payload::jsonb ->> 'changed_by')), id);
