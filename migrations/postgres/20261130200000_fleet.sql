-- The fleet as the operations dashboard reads it (docs/dashboard.md). Every
-- herald process (run, worker, sidecar) writes its row of herald_processes
-- once a second (its heartbeat: role, version, start, and its own figures as
-- JSON: jobs running per kind, connections, users online, deliveries, close
-- codes), and adds what it counted in each 10-second window to its row of
-- herald_samples (jobs done and failed per kind, run-time histogram,
-- deliveries): the charts sum those rows over the fleet. Rows of processes
-- silent for an hour, and samples older than an hour, are deleted.
CREATE TABLE IF NOT EXISTS herald_processes (
    id varchar(100) NOT NULL PRIMARY KEY,
    role varchar(16) NOT NULL,
    host varchar(255) NOT NULL,
    pid integer NOT NULL,
    version varchar(64) NOT NULL,
    started_at timestamp with time zone NOT NULL,
    seen_at timestamp with time zone NOT NULL,
    stopped_at timestamp with time zone NULL,
    figures text NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_processes_seen ON herald_processes (seen_at);
CREATE TABLE IF NOT EXISTS herald_samples (
    at timestamp with time zone NOT NULL,
    process_id varchar(100) NOT NULL,
    figures text NOT NULL,
    PRIMARY KEY (at, process_id)
);
-- Job kinds an operator paused: their queued jobs wait (the kind's workers
-- fetch nothing, and an entry fetched anyway goes back to its queue) until
-- the row is deleted (resume). Durable, so a restart keeps the pause.
CREATE TABLE IF NOT EXISTS herald_paused_kinds (
    kind varchar(40) NOT NULL PRIMARY KEY,
    paused_at timestamp with time zone NOT NULL
);
-- What each claimed scan period came to: when it ended and how many
-- notifications it created (NULL while running, or if its process died).
ALTER TABLE herald_schedule_runs ADD COLUMN IF NOT EXISTS finished_at timestamp with time zone NULL;
ALTER TABLE herald_schedule_runs ADD COLUMN IF NOT EXISTS created integer NULL;
