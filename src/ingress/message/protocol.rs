//! Celery's task protocols: protocol 2 (body `[args, kwargs, embed]`, the
//! task in the message headers) and protocol 1 (one body dict), read into
//! a [`TaskMessage`], with Python's isoformat times.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Refused, TaskMessage};

/// The headers herald reads (Celery's protocol 2 puts the task there);
/// the others (`argsrepr`, `origin`, `stamps`, ...) are skipped unread.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Headers {
    #[serde(default)]
    pub(super) task: Option<Value>,
    #[serde(default)]
    pub(super) id: Option<Value>,
    #[serde(default)]
    pub(super) eta: Option<Value>,
    #[serde(default)]
    pub(super) expires: Option<Value>,
    #[serde(default)]
    pub(super) celery_beat_task: Option<Value>,
    #[serde(default)]
    pub(super) redelivered: Option<Value>,
    #[serde(default)]
    pub(super) compression: Option<Value>,
    #[serde(default)]
    pub(super) ignore_result: Option<Value>,
}

/// A header's text, when it is a non-empty string.
pub(super) fn text(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The call's `(args, kwargs, embed)` from either protocol's body; a
/// protocol 1 body fills in the headers the message itself left out.
fn call_parts(body: Value, headers: &mut Headers) -> Result<(Value, Value, Value), Refused> {
    match body {
        Value::Array(mut parts) if (2..=3).contains(&parts.len()) => {
            let embed = if parts.len() == 3 { parts.pop() } else { None };
            let kwargs = parts.pop().unwrap_or(Value::Null);
            let args = parts.pop().unwrap_or(Value::Null);
            Ok((args, kwargs, embed.unwrap_or(Value::Null)))
        }
        Value::Object(mut dict) if dict.contains_key("args") || dict.contains_key("task") => {
            // Message headers win over the body's (Celery's hybrid_to_proto2).
            for (field, key) in [
                (&mut headers.task, "task"),
                (&mut headers.id, "id"),
                (&mut headers.eta, "eta"),
                (&mut headers.expires, "expires"),
            ] {
                if field.is_none() {
                    *field = dict.remove(key);
                }
            }
            let embed = ["callbacks", "errbacks", "chord"]
                .into_iter()
                .filter_map(|key| Some((key.to_string(), dict.remove(key)?)))
                .collect::<Map<_, _>>();
            let args = dict.remove("args").unwrap_or(Value::Array(vec![]));
            let kwargs = dict.remove("kwargs").unwrap_or(Value::Object(Map::new()));
            Ok((args, kwargs, Value::Object(embed)))
        }
        _ => Err(Refused::unreadable(
            "the body is neither [args, kwargs, embed] (protocol 2) nor a task dict (protocol 1)",
        )),
    }
}

/// Protocol 2: body `[args, kwargs, embed]`, the task in the headers.
/// Protocol 1 (and Celery's hybrid): one body dict holding the task, with
/// any message headers over it (as Celery's `hybrid_to_proto2`).
pub(super) fn task_message(body: Value, mut headers: Headers) -> Result<TaskMessage, Refused> {
    let (args, kwargs, embed) = call_parts(body, &mut headers)?;
    let id = text(&headers.id).ok_or_else(|| Refused::unreadable("the message has no task id"))?;
    let task = text(&headers.task);
    let refuse = |exc_type: &'static str, reason: String| Refused {
        id: Some(id.clone()),
        task: task.clone(),
        exc_type,
        reason,
        reply_to: None,
    };
    let Some(task) = task.clone() else {
        return Err(refuse("ValueError", "the message names no task".into()));
    };
    let args = match args {
        Value::Array(args) => args,
        Value::Null => Vec::new(),
        _ => return Err(refuse("TypeError", "task args must be a list".into())),
    };
    let kwargs = match kwargs {
        Value::Object(kwargs) => kwargs,
        Value::Null => Map::new(),
        _ => {
            return Err(refuse(
                "TypeError",
                "task keyword arguments must be a mapping".into(),
            ));
        }
    };
    let time = |key: &str, value: &Option<Value>| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_time(text).map(Some).ok_or_else(|| {
            refuse(
                "ValueError",
                format!("{key} {text:?} is not an ISO 8601 time"),
            )
        }),
        Some(other) => Err(refuse(
            "ValueError",
            format!("{key} {other} is not an ISO 8601 time"),
        )),
    };
    let flag = |value: &Option<Value>| value.as_ref().and_then(Value::as_bool) == Some(true);
    Ok(TaskMessage {
        eta: time("eta", &headers.eta)?,
        expires: time("expires", &headers.expires)?,
        beat: flag(&headers.celery_beat_task),
        linked: linked(&embed),
        redelivered: flag(&headers.redelivered),
        ignore_result: flag(&headers.ignore_result),
        reply_to: None,
        id,
        task,
        args,
        kwargs,
    })
}

/// Whether the embed names callbacks, errbacks, a chain or a chord.
fn linked(embed: &Value) -> bool {
    ["callbacks", "errbacks", "chain", "chord"]
        .iter()
        .any(|key| match embed.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            Some(_) => true,
        })
}

/// Python's `isoformat()`: with an offset (`+00:00`), or naive, which
/// Celery reads in its timezone (UTC by default).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    Some(naive.and_utc())
}
