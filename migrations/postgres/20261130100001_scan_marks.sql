-- How far each set-based scan has looked, so the overdue scan reads only the
-- tasks whose deadline passed, or that changed (updated_at), since its last
-- run instead of every task ever overdue; a full pass still runs hourly
-- (full_at) for changes that did not touch updated_at.
CREATE TABLE IF NOT EXISTS herald_scan_marks (
    name varchar(64) NOT NULL PRIMARY KEY,
    scanned_until timestamp with time zone NOT NULL,
    full_at timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_task_updated_at ON tasks_task (updated_at);
