//! The job catalog the app server codes against: per kind a JSON Schema
//! generated from the Rust payload type and an example payload, kept in
//! `jobs/<kind>.schema.json` and `jobs/<kind>.example.json`. A test fails
//! when the files are stale; `HERALD_WRITE_CATALOG=1 cargo test catalog`
//! rewrites them. The API's OpenAPI document embeds the schemas too
//! (`HERALD_BLESS=1 cargo test --test herald openapi` rewrites its copy).

use schemars::schema_for;
use serde_json::{Value, json};

use super::{DeadlineReminder, FileAttached, KINDS, Notify, OverdueCheck, StatusChanged};
use crate::config::{ConfigError, QueueSettings};

/// Every kind `queue.concurrency` and `queue.attempts` name is a job kind:
/// the check `startup` runs at load.
pub fn check_queue_settings(queue: &QueueSettings) -> Result<(), ConfigError> {
    let named = queue
        .concurrency
        .keys()
        .map(|kind| ("queue.concurrency", kind));
    let named = named.chain(queue.attempts.keys().map(|kind| ("queue.attempts", kind)));
    for (section, kind) in named {
        if !KINDS.contains(&kind.as_str()) {
            let reason = format!("unknown job kind; known kinds: {}", KINDS.join(", "));
            return Err(ConfigError::new(format!("{section}.{kind}"), reason));
        }
    }
    Ok(())
}

/// One catalog entry.
pub struct Entry {
    pub kind: &'static str,
    pub schema: Value,
    pub example: Value,
}

fn schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schema_for!(T)).unwrap_or(Value::Null)
}

/// Every kind, with its schema and example.
pub fn entries() -> Vec<Entry> {
    vec![
        Entry {
            kind: "deadline_reminder",
            schema: schema::<DeadlineReminder>(),
            example: json!({"task_id": 42}),
        },
        Entry {
            kind: "overdue_check",
            schema: schema::<OverdueCheck>(),
            example: json!({}),
        },
        Entry {
            kind: "file_attached",
            schema: schema::<FileAttached>(),
            example: json!({"task_id": 42, "file_id": 7, "file_name": "report.pdf", "uploaded_by": 3}),
        },
        Entry {
            kind: "status_changed",
            schema: schema::<StatusChanged>(),
            example: json!({"task_id": 42, "old_status": "in_progress", "new_status": "review",
                            "changed_by": 3, "reason": "ready for review"}),
        },
        Entry {
            kind: "notify",
            schema: schema::<Notify>(),
            example: json!({"user_id": 5, "title": "Welcome", "message": "Your account is ready.",
                            "notification_type": "generic", "data": {"url": "/start"}}),
        },
    ]
}
