//! The sidecar's wire vocabulary: close codes, what a client may send
//! (ping, resume, refresh, mark read) and what it receives (the contract's
//! `notification`, `chat_message`, `typing`, `error`, plus the answers).
//! Decoding a client message is a pure function, tested on strings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::payload::NotificationPayload;

/// Close codes the sidecar sends; docs/notifications.md lists them.
pub mod close {
    /// The server is shutting down (RFC 6455 "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent messages faster than
    /// `sidecar.client_messages_per_second` ("rate_limited").
    pub const POLICY_VIOLATION: u16 = 1008;
    /// An inbound message over `sidecar.max_message_size`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The channel layer failed while setting up the connection.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// `sidecar.max_connections` reached: try again later.
    pub const SERVER_FULL: u16 = 1013;
    /// Authentication failed; the reason names why (`missing_token`,
    /// `expired`, `bad_signature`, `alg_none`, `malformed`, ...).
    pub const UNAUTHORIZED: u16 = 4001;
    /// The client stopped answering pings.
    pub const PING_TIMEOUT: u16 = 4002;
    /// The token expired while connected and no refresh came in time.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The client read too slowly: its outbound queue filled or a write
    /// took longer than `sidecar.write_timeout`.
    pub const SLOW_CLIENT: u16 = 4008;
    /// `sidecar.max_connections_per_user` reached for this user.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// A message from the client, a JSON object whose `type` picks the variant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `{"type": "ping"}`, answered `{"type": "pong", "data": {}}`.
    Ping,
    /// `{"type": "resume", "last_id": N}`: the notifications after N.
    Resume { last_id: i64 },
    /// `{"type": "refresh", "token": "..."}`: a fresh access token for the
    /// same user, which moves the connection's expiry.
    Refresh { token: String },
    /// `{"type": "mark_read", "id": N}`.
    MarkRead { id: i64 },
    /// `{"type": "mark_all_read"}`.
    MarkAllRead,
}

/// The client message types, for the error text.
pub const CLIENT_TYPES: &str = "ping, resume, refresh, mark_read, mark_all_read";

/// Why a client message was refused; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("messages must be JSON text")]
    NotText,
    #[error("message is not a JSON object with a string \"type\"")]
    NotAnObject,
    #[error("unknown message type {0:?}; expected one of: {CLIENT_TYPES}")]
    UnknownType(String),
    #[error("invalid {kind:?} message: {reason}")]
    Invalid { kind: String, reason: String },
}

/// Decodes one text message.
pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|_| DecodeError::NotAnObject)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or(DecodeError::NotAnObject)?
        .to_string();
    if !["ping", "resume", "refresh", "mark_read", "mark_all_read"].contains(&kind.as_str()) {
        let shown: String = kind.chars().take(40).collect();
        return Err(DecodeError::UnknownType(shown));
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid {
        kind,
        reason: strip_position(&e.to_string()),
    })
}

/// serde_json appends " at line 1 column N"; the client needs no position.
fn strip_position(text: &str) -> String {
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// An event from the server: always `{"type": ..., "data": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerEvent {
    /// A notification: a `send_notification` group event's `data` as it
    /// came, or a missed row on resume.
    Notification(NotificationPayload),
    /// A `chat_message` group event's `data`, unchanged.
    ChatMessage(Value),
    /// A `typing` group event's `data` (user info and `is_typing`), unchanged.
    Typing(Value),
    /// A client message the server could not do; the socket stays open.
    Error(ErrorData),
    /// The answer to `ping`.
    Pong(Empty),
    /// The end of a replay (`?last_id=` or `resume`).
    Resumed(Resumed),
    /// The answer to `refresh`.
    Refreshed(Refreshed),
    /// The answer to `mark_read` and `mark_all_read`.
    MarkedRead(MarkedRead),
}

/// `data` of an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorData {
    /// Human-friendly text.
    pub message: String,
}

/// An empty `data` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Empty {}

/// `data` of a `resumed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Resumed {
    /// Notifications sent by this replay (rows already sent are skipped).
    pub count: u64,
    /// The last row read, or the requested id when none was read: resume
    /// from here when `more` is true.
    pub last_id: i64,
    /// True when the replay stopped at `replay_limit` rows.
    pub more: bool,
    /// True when everything after the client's position is in this replay
    /// and the pages `more` announces; false when herald cannot vouch for
    /// it (the position's row is not the user's: deleted, or never theirs,
    /// so rows committed late below it cannot be bounded; or more rows
    /// than one replay reads were created within `resume_lookback` below
    /// it): refetch.
    pub recovered: bool,
    /// True when the server started this replay itself: the channel layer
    /// may have dropped live notifications (Redis reconnected, a full
    /// buffer), so they are read from the database.
    pub resync: bool,
}

/// `data` of a `refreshed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Refreshed {
    /// The connection's new expiry, epoch seconds.
    pub exp: i64,
}

/// `data` of a `marked_read` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MarkedRead {
    /// The id asked for; null for `mark_all_read`.
    pub id: Option<i64>,
    /// Rows changed (0 for an id that is not this user's or already read).
    pub updated: u64,
    /// The user's unread notifications now.
    pub unread_count: i64,
}

impl ServerEvent {
    /// The event as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| error_event("event could not be encoded"))
    }
}

/// `{"type": <kind>, "data": <data>}`, for events forwarded as they came
/// from the layer (the same shape [`ServerEvent`] serializes to).
fn event(kind: &str, data: Value) -> String {
    json!({ "type": kind, "data": data }).to_string()
}

/// `{"type": "error", "data": {"message": ...}}`.
pub fn error_event(message: &str) -> String {
    event("error", json!({ "message": message }))
}

/// What a layer event becomes for the browser.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// `send_notification` -> `notification`, with the payload's `id` when
    /// it has one (for de-duplication).
    Notification { id: Option<i64>, text: String },
    /// `chat_message` and `typing`, forwarded with their shapes.
    Other(String),
    /// The layer may have lost messages for this connection
    /// ([`crate::layer::RESYNC`]), from where the loss says: read them
    /// from the database.
    Resync(crate::layer::Loss),
    /// A type the sidecar does not know: logged and dropped.
    Unknown(String),
}

/// Maps a channel layer message (a group event) to what the client gets.
pub fn from_layer(message: &crate::layer::Message) -> Outgoing {
    let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
    let data = message.get("data").cloned().unwrap_or(Value::Null);
    match kind {
        "send_notification" => Outgoing::Notification {
            id: data.get("id").and_then(Value::as_i64),
            text: event("notification", data),
        },
        "chat_message" | "chat.message" => Outgoing::Other(event("chat_message", data)),
        "typing" => Outgoing::Other(event("typing", data)),
        crate::layer::RESYNC => Outgoing::Resync(crate::layer::Loss::of_resync(message)),
        other => Outgoing::Unknown(other.chars().take(100).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_client_message() {
        assert_eq!(decode(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            decode(r#"{"type":"resume","last_id":7}"#),
            Ok(ClientMessage::Resume { last_id: 7 })
        );
        assert_eq!(
            decode(r#"{"type":"refresh","token":"a.b.c"}"#),
            Ok(ClientMessage::Refresh {
                token: "a.b.c".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"mark_read","id":3}"#),
            Ok(ClientMessage::MarkRead { id: 3 })
        );
        assert_eq!(
            decode(r#"{"type":"mark_all_read"}"#),
            Ok(ClientMessage::MarkAllRead)
        );
    }

    #[test]
    fn refuses_the_rest_with_a_reason() {
        assert_eq!(decode("nope"), Err(DecodeError::NotAnObject));
        assert_eq!(decode(r#"{"t":1}"#), Err(DecodeError::NotAnObject));
        assert!(matches!(decode(r#"{"type":"x"}"#), Err(DecodeError::UnknownType(t)) if t == "x"));
        let err = decode(r#"{"type":"resume","last_id":"x"}"#).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        assert!(!err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn typed_events_have_the_wire_shape() {
        assert_eq!(
            ServerEvent::Pong(Empty {}).to_text(),
            r#"{"type":"pong","data":{}}"#
        );
        let error = ServerEvent::Error(ErrorData {
            message: "m".into(),
        });
        assert_eq!(error.to_text(), error_event("m"));
        let marked = ServerEvent::MarkedRead(MarkedRead {
            id: None,
            updated: 2,
            unread_count: 0,
        });
        assert_eq!(
            marked.to_text(),
            r#"{"type":"marked_read","data":{"id":null,"updated":2,"unread_count":0}}"#
        );
        let payload = NotificationPayload {
            id: 1,
            title: "t".into(),
            message: "m".into(),
            notification_type: "overdue".into(),
            is_read: false,
            created_at: "2025-12-11T08:12:34.123456Z".into(),
            data: json!({"task_id": 4}),
        };
        assert_eq!(
            ServerEvent::Notification(payload.clone()).to_text(),
            event("notification", payload.to_value())
        );
    }

    #[test]
    fn layer_events_keep_the_contract_shapes() {
        let msg = |v: Value| v.as_object().unwrap().clone();
        let n = from_layer(&msg(json!({"type":"send_notification","data":{"id":5}})));
        assert_eq!(
            n,
            Outgoing::Notification {
                id: Some(5),
                text: r#"{"type":"notification","data":{"id":5}}"#.into()
            }
        );
        let t = from_layer(&msg(json!({"type":"typing","data":{"is_typing":true}})));
        assert_eq!(
            t,
            Outgoing::Other(r#"{"type":"typing","data":{"is_typing":true}}"#.into())
        );
        let u = from_layer(&msg(json!({"type":"whatever"})));
        assert_eq!(u, Outgoing::Unknown("whatever".into()));
    }
}
