//! A task message already split by its broker into its parts: the body's
//! bytes, their content type, the headers and the properties that matter.
//! kombu's Redis envelope is split by `envelope`; an AMQP delivery carries
//! its parts as the frame's own fields (`broker::amqp`).

use serde_json::{Map, Value};

use super::protocol::{Headers, task_message, text};
use super::{Refused, TaskMessage, body};

/// One message's parts, whatever broker carried them.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The body after the broker's own encoding (kombu's base64 on Redis),
    /// or why that encoding did not undo.
    pub body: Result<&'a [u8], Refused>,
    /// `application/json` when absent, as kombu assumes.
    pub content_type: Option<&'a str>,
    /// The task's headers (protocol 2 puts the task there).
    pub headers: Map<String, Value>,
    /// The `correlation_id` property: the task id when the headers lack it.
    pub correlation_id: Option<String>,
    /// The broker says it delivered this message before.
    pub redelivered: bool,
    /// The `reply_to` property: the caller's reply queue (rpc:// results).
    pub reply_to: Option<String>,
}

/// Reads a task message from its parts.
pub fn decode_parts(parts: Parts<'_>) -> Result<TaskMessage, Refused> {
    let headers: Headers = serde_json::from_value(Value::Object(parts.headers))
        .map_err(|e| Refused::unreadable(format!("the message headers do not read: {e}")))?;
    // Known before the body is read, so a body herald refuses still gets
    // its FAILURE result.
    let id = text(&headers.id).or_else(|| parts.correlation_id.filter(|id| !id.is_empty()));
    let task = text(&headers.task);
    let reply_to = parts.reply_to.filter(|queue| !queue.is_empty());
    let named = |error: Refused| Refused {
        id: error.id.or_else(|| id.clone()),
        task: error.task.or_else(|| task.clone()),
        reply_to: reply_to.clone(),
        ..error
    };
    let body = parts
        .body
        .and_then(|bytes| body::value(bytes, parts.content_type, &headers.compression))
        .map_err(named)?;
    let mut message = task_message(body, headers).map_err(named)?;
    message.redelivered = message.redelivered || parts.redelivered;
    message.reply_to = reply_to;
    Ok(message)
}
