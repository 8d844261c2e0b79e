-- The job ledger: every submitted job, its state and attempts, whatever
-- queue (apalis on SQLite, PostgreSQL or Redis) carries it. Herald's retry
-- policy and dead jobs live here, so they behave alike on every backend.
CREATE TABLE IF NOT EXISTS herald_jobs (
    id varchar(26) NOT NULL PRIMARY KEY,
    kind varchar(40) NOT NULL,
    payload text NOT NULL,
    dedup_key varchar(255) NULL UNIQUE,
    state varchar(16) NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    last_error text NULL,
    run_at datetime NOT NULL,
    created_at datetime NOT NULL,
    updated_at datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_jobs_state ON herald_jobs (state, updated_at);
