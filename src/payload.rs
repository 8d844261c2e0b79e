//! The canonical notification payload of the contract: exactly `id, title,
//! message, notification_type, is_read, created_at, data`, with `created_at`
//! in RFC 3339 UTC with microseconds and `Z`. Every path that sends a
//! notification to a client builds it here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::store::Notification;

/// What `send_notification_ws` carries under `data`, and what the browser
/// receives under `{"type": "notification", "data": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NotificationPayload {
    pub id: i64,
    pub title: String,
    pub message: String,
    pub notification_type: String,
    pub is_read: bool,
    pub created_at: String,
    /// Extra routing data (`{"task_id": 42}`), `null` when the row has none.
    pub data: Value,
}

impl From<&Notification> for NotificationPayload {
    fn from(row: &Notification) -> Self {
        Self {
            id: row.id,
            title: row.title.clone(),
            message: row.message.clone(),
            notification_type: row.notification_type.clone(),
            is_read: row.is_read,
            created_at: format_created_at(row.created_at),
            data: row.data.as_ref().map_or(Value::Null, |d| d.0.clone()),
        }
    }
}

impl NotificationPayload {
    /// The payload as a JSON value (an object with the seven fields).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a payload always serializes")
    }
}

/// `2025-12-11T08:12:34.123456Z`: always six fractional digits.
pub fn format_created_at(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn created_at_has_microseconds_and_z() {
        let at = Utc.with_ymd_and_hms(2025, 12, 11, 8, 12, 34).unwrap();
        assert_eq!(format_created_at(at), "2025-12-11T08:12:34.000000Z");
    }
}
