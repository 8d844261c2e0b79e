-- One row per scheduled scan period that some worker process claimed: the
-- first process to insert (name, period_start) runs that period's scan, the
-- others skip it, so a period's scan runs once however many workers there are.
CREATE TABLE IF NOT EXISTS herald_schedule_runs (
    name varchar(64) NOT NULL,
    period_start timestamp with time zone NOT NULL,
    claimed_by varchar(64) NOT NULL,
    PRIMARY KEY (name, period_start)
);
