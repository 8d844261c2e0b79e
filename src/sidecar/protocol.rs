//! The sidecar's wire vocabulary: close codes, what a client may send
//! (ping, resume, refresh, mark read) and what it receives (the contract's
//! `notification`, `chat_message`, `typing`, `error`, plus the answers).
//! Decoding a client message is a pure function, tested on strings.

use serde::Deserialize;
use serde_json::{Value, json};

/// Close codes the sidecar sends; docs/notifications.md lists them.
pub mod close {
    /// The server is shutting down (RFC 6455 "going away").
    pub const GOING_AWAY: u16 = 1001;
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// `{"type": <kind>, "data": <data>}`, the one shape of every server event.
pub fn event(kind: &str, data: Value) -> String {
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
