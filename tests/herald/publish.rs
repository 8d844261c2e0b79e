//! `send_notification_ws`: the group, the envelope, and the logged failure.

use herald::config::Settings;
use herald::layer::{ChannelLayer, MemoryLayer};
use herald::payload::NotificationPayload;
use herald::publish::{notification_group, send_notification_ws};
use serde_json::{Value, json};

use crate::helpers::LogCapture;

fn layer() -> MemoryLayer {
    MemoryLayer::new(&Settings::defaults().layer).unwrap()
}

fn payload(id: i64) -> NotificationPayload {
    NotificationPayload {
        id,
        title: "Task Overdue".into(),
        message: "Task \"Report\" is now overdue.".into(),
        notification_type: "overdue".into(),
        is_read: false,
        created_at: "2025-12-11T08:12:34.123456Z".into(),
        data: json!({"task_id": 42}),
    }
}

#[tokio::test]
async fn reaches_the_users_group_only() {
    let layer = layer();
    let mine = layer.new_channel("specific").await.unwrap();
    let theirs = layer.new_channel("specific").await.unwrap();
    layer
        .group_add(&notification_group(42), &mine)
        .await
        .unwrap();
    layer
        .group_add(&notification_group(43), &theirs)
        .await
        .unwrap();
    let report = send_notification_ws(&layer, 42, &payload(123))
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    let received = Value::Object(layer.receive(&mine).await.unwrap());
    assert_eq!(
        received,
        json!({"type": "send_notification", "data": payload(123).to_value()})
    );
    assert_eq!(notification_group(42), "notifications_42");
    let unrelated = layer
        .group_send(
            &notification_group(43),
            json!({"type": "x"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert_eq!(unrelated.delivered, 1);
    assert_eq!(
        layer.receive(&theirs).await.unwrap()["type"],
        "x",
        "43 got nothing of 42's"
    );
}

#[test]
fn failure_is_logged_with_user_notification_and_cause() {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(capture.clone())
        .finish();
    let layer = layer();
    layer.close();
    let result = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(send_notification_ws(&layer, 42, &payload(123)))
    });
    assert!(result.is_err());
    let line: Value =
        serde_json::from_str(capture.text().lines().next().expect("one log line")).unwrap();
    assert_eq!(line["level"], "ERROR");
    assert_eq!(
        line["fields"]["message"],
        "Failed to send WebSocket notification"
    );
    assert_eq!(line["fields"]["user_id"], 42);
    assert_eq!(line["fields"]["notification_id"], 123);
    assert_eq!(line["fields"]["error"], "the channel layer is closed");
}
