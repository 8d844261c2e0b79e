//! kombu's Redis transport envelope: the JSON object `LPUSH` put in the
//! queue list, its body as text (base64 by default), the task's headers,
//! and the `properties` with the task id and the redelivered mark.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::parts::{Parts, decode_parts};
use super::{Refused, TaskMessage};

/// The kombu envelope: what `LPUSH` put in the queue list.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    body: Value,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    properties: Properties,
}

/// The envelope's `properties` that matter here.
#[derive(Debug, Default, Deserialize)]
struct Properties {
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    correlation_id: Option<Value>,
    #[serde(default)]
    delivery_info: Option<Value>,
    #[serde(default)]
    reply_to: Option<Value>,
}

impl Properties {
    fn redelivered(&self) -> bool {
        let info = self.delivery_info.as_ref();
        info.and_then(|i| i.get("redelivered"))
            .and_then(Value::as_bool)
            == Some(true)
    }
}

/// Reads one message as popped from a queue list.
pub fn decode(raw: &[u8]) -> Result<TaskMessage, Refused> {
    let mut envelope: Envelope = serde_json::from_slice(raw)
        .map_err(|e| Refused::unreadable(format!("the message is not a kombu envelope: {e}")))?;
    let headers = match std::mem::take(&mut envelope.headers) {
        Value::Object(headers) => headers,
        Value::Null => Map::new(),
        _ => return Err(Refused::unreadable("the message headers are not a mapping")),
    };
    let correlation_id = match &envelope.properties.correlation_id {
        Some(Value::String(id)) => Some(id.clone()),
        _ => None,
    };
    let body = body_bytes(&envelope);
    decode_parts(Parts {
        body: body.as_deref().map_err(Clone::clone),
        content_type: envelope.content_type.as_deref(),
        headers,
        correlation_id,
        redelivered: envelope.properties.redelivered(),
        reply_to: match &envelope.properties.reply_to {
            Some(Value::String(queue)) => Some(queue.clone()),
            _ => None,
        },
    })
}

/// The body's bytes, after kombu's body encoding.
fn body_bytes(envelope: &Envelope) -> Result<Vec<u8>, Refused> {
    let Value::String(body) = &envelope.body else {
        return Err(Refused::unreadable("the message body is not a string"));
    };
    match envelope.properties.body_encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| Refused::unreadable(format!("the base64 body does not decode: {e}"))),
        None | Some("utf-8") | Some("utf8") => Ok(body.as_bytes().to_vec()),
        Some(other) => Err(Refused::unreadable(format!(
            "body encoding {other:?} is not supported"
        ))),
    }
}
