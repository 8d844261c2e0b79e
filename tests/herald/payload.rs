//! The canonical payload, field for field against the contract's example.

use chrono::{DateTime, Utc};
use herald::payload::NotificationPayload;
use herald::publish::notification_event;
use herald::store::{Backend, NewNotification, Notification};
use serde_json::json;
use sqlx::types::Json;

fn contract_row() -> Notification {
    Notification {
        id: 123,
        user_id: 7,
        title: "Task Overdue".into(),
        message: "Task \"Report\" is now overdue.".into(),
        notification_type: "overdue".into(),
        is_read: false,
        created_at: "2025-12-11T08:12:34.123456Z"
            .parse::<DateTime<Utc>>()
            .unwrap(),
        data: Some(Json(json!({"task_id": 42}))),
        dedup_key: Some("overdue:42".into()),
    }
}

/// The contract's example event, byte for byte (keys in the contract's order).
#[test]
fn payload_matches_the_contract_example() {
    let payload = NotificationPayload::from(&contract_row());
    let text = serde_json::to_string(&payload).unwrap();
    assert_eq!(
        text,
        r#"{"id":123,"title":"Task Overdue","message":"Task \"Report\" is now overdue.","notification_type":"overdue","is_read":false,"created_at":"2025-12-11T08:12:34.123456Z","data":{"task_id":42}}"#
    );
    let value = payload.to_value();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "id",
        "title",
        "message",
        "notification_type",
        "is_read",
        "created_at",
        "data",
    ];
    expected.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "exactly the seven canonical fields");
    assert_eq!(value["created_at"], "2025-12-11T08:12:34.123456Z");
}

#[test]
fn group_event_wraps_the_payload() {
    let payload = NotificationPayload::from(&contract_row());
    let event = serde_json::Value::Object(notification_event(&payload));
    assert_eq!(
        event,
        json!({"type": "send_notification", "data": payload.to_value()})
    );
}

#[test]
fn row_without_data_gives_null() {
    let mut row = contract_row();
    row.data = None;
    assert_eq!(
        NotificationPayload::from(&row).to_value()["data"],
        serde_json::Value::Null
    );
}

/// A stored row's payload keeps microseconds and `Z` and parses back to the
/// row's time.
#[tokio::test]
async fn stored_row_payload_has_microsecond_utc_time() {
    let db = crate::helpers::fresh_store(Backend::Sqlite).await;
    let row = db
        .store
        .create_notification(&NewNotification {
            user_id: 1,
            title: "t".into(),
            message: "m".into(),
            notification_type: "generic".into(),
            data: json!({}),
            dedup_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    let created_at = NotificationPayload::from(&row).created_at;
    assert_eq!(created_at.len(), "2025-12-11T08:12:34.123456Z".len());
    assert!(created_at.ends_with('Z'));
    assert_eq!(created_at.parse::<DateTime<Utc>>().unwrap(), row.created_at);
}
