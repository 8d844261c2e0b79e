//! What the database would refuse, refused at submission instead: a NUL
//! character in any text (PostgreSQL stores none), text longer than its
//! column, and ids outside what their column holds or below 1. Each error
//! names the payload field, as a schema error does.

use serde_json::Value;

use super::{Job, JobInputError};
use crate::store::ColumnLimits;

impl Job {
    /// Checks the job against the tables it will write (`limits`).
    pub fn check_limits(&self, limits: &ColumnLimits) -> Result<(), JobInputError> {
        no_nul(
            &serde_json::to_value(self).unwrap_or_default()["payload"],
            "",
        )?;
        match self {
            Job::Notify(job) => {
                id_in_range("user_id", job.user_id, limits.user_id_max)?;
                fits("title", &job.title, limits.title)?;
                not_empty("notification_type", &job.notification_type)?;
                fits(
                    "notification_type",
                    &job.notification_type,
                    limits.notification_type,
                )?;
                if let Some(key) = &job.dedup_key {
                    not_empty("dedup_key", key)?;
                    fits("dedup_key", key, limits.dedup_key)?;
                }
                Ok(())
            }
            Job::FileAttached(job) => id_in_range("task_id", job.task_id, limits.task_id_max),
            Job::StatusChanged(job) => id_in_range("task_id", job.task_id, limits.task_id_max),
            Job::DeadlineReminder(job) => match job.task_id {
                Some(id) => id_in_range("task_id", id, limits.task_id_max),
                None => Ok(()),
            },
            Job::OverdueCheck(_) => Ok(()),
        }
    }
}

fn invalid(field: &str, reason: String) -> JobInputError {
    JobInputError::OverLimit {
        field: field.to_string(),
        reason,
    }
}

/// No string in `value` (keys included) holds a NUL character.
fn no_nul(value: &Value, path: &str) -> Result<(), JobInputError> {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(text) if text.contains('\0') => Err(invalid(
            if path.is_empty() { "." } else { path },
            "contains a NUL character (\\u0000), which the database does not store".into(),
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| no_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key.contains('\0') {
                return Err(invalid(&at(key), "a key contains a NUL character".into()));
            }
            no_nul(item, &at(key))
        }),
        _ => Ok(()),
    }
}

fn fits(field: &str, text: &str, limit: Option<usize>) -> Result<(), JobInputError> {
    match limit {
        Some(limit) if text.chars().count() > limit => Err(invalid(
            field,
            format!("longer than {limit} characters, the column's size"),
        )),
        _ => Ok(()),
    }
}

fn not_empty(field: &str, text: &str) -> Result<(), JobInputError> {
    if text.is_empty() {
        return Err(invalid(field, "must not be empty".into()));
    }
    Ok(())
}

fn id_in_range(field: &str, id: i64, max: i64) -> Result<(), JobInputError> {
    if (1..=max).contains(&id) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!("must be an id from 1 to {max} (the column's range)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notify(payload: Value) -> Job {
        super::super::parse("notify", payload).unwrap()
    }

    fn field(result: Result<(), JobInputError>) -> String {
        match result {
            Err(JobInputError::OverLimit { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn what_the_database_refuses_is_named() {
        let limits = ColumnLimits {
            user_id_max: i64::from(i32::MAX),
            ..ColumnLimits::default()
        };
        let base = json!({"user_id": 1, "title": "t", "message": "m", "notification_type": "x"});
        assert!(notify(base.clone()).check_limits(&limits).is_ok());
        let with = |key: &str, value: Value| {
            let mut payload = base.clone();
            payload[key] = value;
            notify(payload).check_limits(&limits)
        };
        assert_eq!(field(with("title", json!("a\u{0}b"))), "title");
        assert_eq!(field(with("title", json!("x".repeat(256)))), "title");
        assert!(
            with("title", json!("é".repeat(255))).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            field(with("notification_type", json!("y".repeat(51)))),
            "notification_type"
        );
        assert_eq!(
            field(with("notification_type", json!(""))),
            "notification_type"
        );
        assert_eq!(field(with("user_id", json!(-1))), "user_id");
        assert_eq!(field(with("user_id", json!(0))), "user_id");
        assert_eq!(field(with("user_id", json!(2_147_483_648_i64))), "user_id");
        assert!(with("user_id", json!(2_147_483_647)).is_ok());
        assert_eq!(
            field(with("data", json!({"a": ["ok", "n\u{0}"]}))),
            "data.a[1]"
        );
        assert_eq!(field(with("dedup_key", json!(""))), "dedup_key");
    }
}
