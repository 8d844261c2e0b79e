//! Publishing a stored notification to its user's group: the contract's
//! `send_notification_ws(user_id, data)`. Every code path that publishes a
//! notification goes through [`send_notification_ws`]; [`outbox`] makes sure
//! every committed row is published at least once.

pub mod outbox;

use serde_json::{Value, json};

use crate::layer::{ChannelLayer, GroupSendReport, LayerError, Message};
use crate::payload::NotificationPayload;

/// The per-user notification group: `notifications_{user_id}`.
pub fn notification_group(user_id: i64) -> String {
    format!("notifications_{user_id}")
}

/// `{"type": "send_notification", "data": <payload>}`, the group message
/// Django's `NotificationConsumer.send_notification` handles.
pub fn notification_event(payload: &NotificationPayload) -> Message {
    match json!({ "type": "send_notification", "data": payload.to_value() }) {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Sends the payload to `notifications_{user_id}`. A failure is logged as
/// `Failed to send WebSocket notification` with user_id, notification_id and
/// the cause, and returned so the caller can retry; the stored row is never
/// touched here.
pub async fn send_notification_ws(
    layer: &dyn ChannelLayer,
    user_id: i64,
    payload: &NotificationPayload,
) -> Result<GroupSendReport, LayerError> {
    let mut results = send_notifications_ws(layer, &[(user_id, payload)]).await;
    results.remove(0)
}

/// [`send_notification_ws`] for many notifications, answering in their
/// order; the layer sends them together ([`ChannelLayer::group_send_many`]).
pub async fn send_notifications_ws(
    layer: &dyn ChannelLayer,
    notifications: &[(i64, &NotificationPayload)],
) -> Vec<Result<GroupSendReport, LayerError>> {
    let sends = notifications
        .iter()
        .map(|(user_id, payload)| (notification_group(*user_id), notification_event(payload)))
        .collect();
    let results = layer.group_send_many(sends).await;
    for ((user_id, payload), result) in notifications.iter().zip(&results) {
        if let Err(error) = result {
            tracing::error!(
                user_id,
                notification_id = payload.id,
                error = %error,
                "Failed to send WebSocket notification"
            );
        }
    }
    results
}
