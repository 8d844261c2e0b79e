//! Decoding a Celery task message into the call it asks for: kombu's Redis
//! envelope (`envelope`: `body`, `content-type`, `headers`, `properties`),
//! its body (`body`: base64 by default, JSON or msgpack), and Celery's task
//! protocol 2 (`[args, kwargs, embed]` with the task in the headers) or 1
//! (one dict) (`protocol`). Pure functions, tested on messages the real
//! packages wrote.

mod body;
mod envelope;
mod parts;
mod protocol;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use envelope::decode;
pub use parts::{Parts, decode_parts};
pub use protocol::parse_time;

/// The task a message asks for, as the ingress needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The Celery task id (`headers.id`), the job's dedup key.
    pub id: String,
    /// The registered task name (`headers.task`).
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    /// Run at (`countdown`/`eta`); `None`: now.
    pub eta: Option<DateTime<Utc>>,
    /// Never run after (`expires`).
    pub expires: Option<DateTime<Utc>>,
    /// Sent by `celery beat` (header `celery_beat_task`).
    pub beat: bool,
    /// Links, chains or chords: other Celery tasks to run after this one.
    pub linked: bool,
    /// Put back by a restore (kombu marks `redelivered`): it may have
    /// been taken, and recorded, before.
    pub redelivered: bool,
    /// The caller's reply queue (the `reply_to` property), where the rpc://
    /// result backend sends the task's end.
    pub reply_to: Option<String>,
    /// Sent with `ignore_result` (header): no result is written.
    pub ignore_result: bool,
}

/// Why a message cannot run. `id` is the task id when the message got far
/// enough to name one (then a FAILURE result tells the caller why).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub id: Option<String>,
    pub task: Option<String>,
    /// Python's exception type for the result (`builtins`): `ValueError`
    /// for a message herald cannot read, `TypeError` for bad arguments.
    pub exc_type: &'static str,
    pub reason: String,
    /// The caller's reply queue, when the message got far enough to name one.
    pub reply_to: Option<String>,
}

impl Refused {
    fn unreadable(reason: impl Into<String>) -> Self {
        Refused {
            id: None,
            task: None,
            exc_type: "ValueError",
            reason: reason.into(),
            reply_to: None,
        }
    }
}
