-- Django-compatible tables (app labels `notifications` and `tasks`), so herald
-- can share the application's database. `dedup_key` is herald's addition:
-- at most one notification per (user, dedup_key); NULL keys never collide.
CREATE TABLE IF NOT EXISTS notifications_notification (
    id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    user_id bigint NOT NULL,
    title varchar(255) NOT NULL,
    message text NOT NULL,
    type varchar(50) NOT NULL,
    is_read bool NOT NULL DEFAULT 0,
    created_at datetime NOT NULL,
    data text NULL CHECK (data IS NULL OR json_valid(data)),
    dedup_key varchar(255) NULL,
    UNIQUE (user_id, dedup_key)
);
CREATE INDEX IF NOT EXISTS notifications_notification_user_id_id
    ON notifications_notification (user_id, id);
CREATE INDEX IF NOT EXISTS notifications_notification_unread
    ON notifications_notification (user_id) WHERE NOT is_read;

CREATE TABLE IF NOT EXISTS tasks_task (
    id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    title varchar(255) NOT NULL,
    status varchar(32) NOT NULL,
    deadline datetime NULL,
    assignee_id bigint NULL,
    created_by_id bigint NULL,
    created_at datetime NOT NULL,
    updated_at datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_task_deadline ON tasks_task (deadline);
