//! Decoding a Celery task message as kombu's Redis transport stores it: the
//! JSON envelope (`body`, `content-type`, `headers`, `properties`), its body
//! (base64 by default, JSON or msgpack), and Celery's task protocol 2
//! (`[args, kwargs, embed]` with the task in the headers) or 1 (one dict).
//! Pure functions, tested on messages the real packages wrote.

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

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
}

impl Refused {
    fn unreadable(reason: impl Into<String>) -> Self {
        Refused {
            id: None,
            task: None,
            exc_type: "ValueError",
            reason: reason.into(),
        }
    }
}

/// The kombu envelope: what `LPUSH` put in the queue list.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    body: Value,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    properties: Properties,
}

/// The headers herald reads (Celery's protocol 2 puts the task there);
/// the others (`argsrepr`, `origin`, `stamps`, ...) are skipped unread.
#[derive(Debug, Default, Deserialize)]
struct Headers {
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    eta: Option<Value>,
    #[serde(default)]
    expires: Option<Value>,
    #[serde(default)]
    celery_beat_task: Option<Value>,
    #[serde(default)]
    redelivered: Option<Value>,
    #[serde(default)]
    compression: Option<Value>,
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
    // Known before the body is read, so a body herald refuses still gets
    // its FAILURE result.
    let id = text(&envelope.headers.id).or_else(|| text(&envelope.properties.correlation_id));
    let task = text(&envelope.headers.task);
    let named = |error: Refused| Refused {
        id: error.id.or_else(|| id.clone()),
        task: error.task.or_else(|| task.clone()),
        ..error
    };
    let body = body_value(&envelope).map_err(named)?;
    let headers = std::mem::take(&mut envelope.headers);
    let mut message = task_message(body, headers).map_err(named)?;
    message.redelivered = message.redelivered || envelope.properties.redelivered();
    Ok(message)
}

/// The body's bytes (after kombu's body encoding and Celery's compression)
/// read by its content type.
fn body_value(envelope: &Envelope) -> Result<Value, Refused> {
    let bytes = body_bytes(envelope)?;
    if let Some(compression) = &envelope.headers.compression
        && !compression.is_null()
    {
        return Err(Refused::unreadable(format!(
            "compressed task messages ({compression}) are not supported: \
             unset task_compression for herald's tasks"
        )));
    }
    let content_type = envelope
        .content_type
        .as_deref()
        .unwrap_or("application/json");
    match content_type {
        "application/json" => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Refused::unreadable(format!("the JSON body does not parse: {e}")))?;
            // Only a body that has kombu's typed values needs the walk.
            if bytes.windows(8).any(|w| w == b"__type__") {
                plain(value)
            } else {
                Ok(value)
            }
        }
        "application/x-msgpack" => {
            let value: Value = rmp_serde::from_slice(&bytes).map_err(|e| {
                Refused::unreadable(format!("the msgpack body does not parse: {e}"))
            })?;
            Ok(value)
        }
        "application/x-python-serialize" => Err(Refused::unreadable(
            "pickle is refused: herald never unpickles (it would run code the message names); \
             send herald's tasks with task_serializer=\"json\"",
        )),
        other => Err(Refused::unreadable(format!(
            "content type {other:?} is not supported: send herald's tasks as JSON \
             (task_serializer=\"json\") or msgpack"
        ))),
    }
}

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

/// Replaces kombu's typed JSON objects (`{"__type__", "__value__"}`:
/// datetime, date, time, decimal, uuid, bytes) by their plain values, as
/// Python would see them printed: ISO text, decimal text, the uuid's text.
fn plain(value: Value) -> Result<Value, Refused> {
    Ok(match value {
        Value::Array(items) => {
            Value::Array(items.into_iter().map(plain).collect::<Result<_, _>>()?)
        }
        Value::Object(map)
            if map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__") =>
        {
            typed(&map)?
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, plain(v)?)))
                .collect::<Result<_, Refused>>()?,
        ),
        other => other,
    })
}

fn typed(map: &Map<String, Value>) -> Result<Value, Refused> {
    let value = &map["__value__"];
    match (map["__type__"].as_str(), value) {
        (Some("datetime" | "date" | "time" | "decimal" | "bytes"), Value::String(_)) => {
            Ok(value.clone())
        }
        (Some("uuid"), Value::Object(uuid)) => match uuid.get("hex").and_then(Value::as_str) {
            Some(hex) => Ok(Value::String(hyphenated(hex))),
            None => Err(Refused::unreadable("a uuid value without its hex")),
        },
        (kind, _) => Err(Refused::unreadable(format!(
            "kombu value of type {} is not supported",
            kind.unwrap_or("?")
        ))),
    }
}

/// `str(uuid.UUID(hex=...))`: the 8-4-4-4-12 form.
fn hyphenated(hex: &str) -> String {
    uuid::Uuid::try_parse(hex).map_or_else(|_| hex.to_string(), |u| u.hyphenated().to_string())
}

fn text(value: &Option<Value>) -> Option<String> {
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
fn task_message(body: Value, mut headers: Headers) -> Result<TaskMessage, Refused> {
    let (args, kwargs, embed) = call_parts(body, &mut headers)?;
    let id = text(&headers.id).ok_or_else(|| Refused::unreadable("the message has no task id"))?;
    let task = text(&headers.task);
    let refuse = |exc_type: &'static str, reason: String| Refused {
        id: Some(id.clone()),
        task: task.clone(),
        exc_type,
        reason,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTORS: &str = include_str!("../../tests/fixtures/celery/redis-broker-messages.json");

    /// The four messages of the vectors, in the order a consumer takes them.
    fn vectors() -> Vec<Value> {
        let all: Value = serde_json::from_str(VECTORS).unwrap();
        all["queue_herald_rpop_order"].as_array().unwrap().clone()
    }

    fn raw(envelope: &Value) -> Vec<u8> {
        serde_json::to_vec(envelope).unwrap()
    }

    /// The envelope with its body replaced by `body` (base64 of its JSON).
    fn with_body(envelope: &Value, body: &Value) -> Value {
        let mut envelope = envelope.clone();
        let bytes = serde_json::to_vec(body).unwrap();
        envelope["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        envelope
    }

    #[test]
    fn the_real_messages_decode_into_their_calls() {
        let messages: Vec<TaskMessage> = vectors()
            .iter()
            .map(|envelope| decode(&raw(envelope)).unwrap())
            .collect();
        let notify = &messages[0];
        assert_eq!(notify.task, "apps.notifications.tasks.notify");
        assert_eq!(notify.id, "9fe8d90c-986f-42a1-aaf2-521a5a001db6");
        assert_eq!(
            notify.args,
            [
                json!(5),
                json!("Welcome"),
                json!("Your account is ready."),
                json!("general"),
                json!({"url": "/start"})
            ]
        );
        assert!(notify.kwargs.is_empty());
        assert_eq!(
            (notify.eta, notify.expires, notify.beat, notify.linked),
            (None, None, false, false)
        );
        let file = &messages[1];
        assert_eq!(file.task, "apps.tasks.tasks.file_attached");
        assert_eq!(
            file.args,
            [json!(42), json!(501), json!("report.pdf"), json!(7)]
        );
        let status = &messages[2];
        assert_eq!(status.task, "apps.tasks.tasks.status_changed");
        assert_eq!(
            status.kwargs,
            json!({"reason": "ready"}).as_object().unwrap().clone()
        );
        assert_eq!(
            status.eta,
            Some(
                "2026-11-30T08:11:42.927878Z"
                    .parse::<DateTime<Utc>>()
                    .unwrap()
            )
        );
        let expiring = &messages[3];
        assert_eq!(
            expiring.expires,
            Some("2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert_eq!(expiring.eta, None);
    }

    #[test]
    fn a_raw_utf8_body_and_a_msgpack_body_decode_too() {
        let envelope = &vectors()[1];
        let body = json!([[1, 2, "a.pdf", 3], {}, {"callbacks": null}]);
        let mut plain = envelope.clone();
        plain["body"] = json!(body.to_string());
        plain["properties"]["body_encoding"] = json!("utf-8");
        assert_eq!(
            decode(&raw(&plain)).unwrap().args,
            body[0].as_array().unwrap().clone()
        );
        let mut packed = envelope.clone();
        let bytes = rmp_serde::to_vec(&body).unwrap();
        packed["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        packed["content-type"] = json!("application/x-msgpack");
        assert_eq!(
            decode(&raw(&packed)).unwrap().args,
            body[0].as_array().unwrap().clone()
        );
    }

    #[test]
    fn pickle_and_unknown_content_types_are_refused_naming_the_task() {
        let mut envelope = vectors()[0].clone();
        envelope["content-type"] = json!("application/x-python-serialize");
        let refused = decode(&raw(&envelope)).unwrap_err();
        assert_eq!(
            refused.id.as_deref(),
            Some("9fe8d90c-986f-42a1-aaf2-521a5a001db6")
        );
        assert_eq!(
            refused.task.as_deref(),
            Some("apps.notifications.tasks.notify")
        );
        assert!(refused.reason.contains("pickle is refused"), "{refused}");
        envelope["content-type"] = json!("application/x-yaml");
        assert!(
            decode(&raw(&envelope))
                .unwrap_err()
                .reason
                .contains("application/x-yaml")
        );
        let mut compressed = vectors()[0].clone();
        compressed["headers"]["compression"] = json!("application/x-gzip");
        assert!(
            decode(&raw(&compressed))
                .unwrap_err()
                .reason
                .contains("compressed")
        );
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        for bytes in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"body\": 5}",
            b"\xff\xfe",
        ] {
            let refused = decode(bytes).unwrap_err();
            assert_eq!(refused.id, None, "{refused}");
        }
        let envelope = &vectors()[0];
        for body in [
            json!(5),
            json!([1]),
            json!(["x", {}, {}]),
            json!([[], "x", {}]),
        ] {
            let refused = decode(&raw(&with_body(envelope, &body))).unwrap_err();
            assert!(refused.id.is_some(), "the id is known: {refused}");
        }
        let mut bad_eta = vectors()[0].clone();
        bad_eta["headers"]["eta"] = json!("tomorrow");
        assert!(decode(&raw(&bad_eta)).unwrap_err().reason.contains("eta"));
    }

    #[test]
    fn protocol_1_bodies_are_read() {
        let envelope = &vectors()[1];
        let mut v1 = with_body(
            envelope,
            &json!({"task": "apps.tasks.tasks.file_attached", "id": "v1-id", "args": [1, 2, "b.pdf", 3],
                    "kwargs": {}, "eta": "2030-01-01T00:00:00", "expires": null, "utc": true,
                    "callbacks": null, "errbacks": null, "chord": null, "retries": 0}),
        );
        v1["headers"] = json!({});
        let message = decode(&raw(&v1)).unwrap();
        assert_eq!(message.id, "v1-id");
        assert_eq!(message.task, "apps.tasks.tasks.file_attached");
        assert_eq!(message.args.len(), 4);
        assert_eq!(message.eta, Some("2030-01-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn kombu_typed_values_become_plain_values() {
        let envelope = &vectors()[0];
        let body = json!([[{"__type__": "datetime", "__value__": "2026-01-01T00:00:00"},
                           {"__type__": "uuid", "__value__": {"hex": "0b1f4c1e00004000800000000000000a"}},
                           {"__type__": "decimal", "__value__": "1.50"}], {}, {}]);
        let message = decode(&raw(&with_body(envelope, &body))).unwrap();
        assert_eq!(
            message.args,
            [
                json!("2026-01-01T00:00:00"),
                json!("0b1f4c1e-0000-4000-8000-00000000000a"),
                json!("1.50")
            ]
        );
        let unknown = json!([[{"__type__": "frozenset", "__value__": []}], {}, {}]);
        assert!(decode(&raw(&with_body(envelope, &unknown))).is_err());
    }

    #[test]
    fn beat_headers_and_links_are_seen() {
        let mut envelope = with_body(
            &vectors()[0],
            &json!([[], {}, {"callbacks": [{"task": "x"}], "errbacks": null, "chain": null, "chord": null}]),
        );
        envelope["headers"]["celery_beat_task"] = json!(true);
        let message = decode(&raw(&envelope)).unwrap();
        assert!(message.beat && message.linked && !message.redelivered);
        envelope["properties"]["delivery_info"]["redelivered"] = json!(true);
        assert!(decode(&raw(&envelope)).unwrap().redelivered);
    }

    #[test]
    fn python_isoformat_times_parse() {
        let at = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            at("2026-11-30T08:11:42.927878+00:00").unwrap(),
            "2026-11-30T08:11:42.927878+00:00"
        );
        assert_eq!(
            at("2030-01-01T00:00:00+02:00").unwrap(),
            "2029-12-31T22:00:00+00:00"
        );
        assert_eq!(
            at("2030-01-01T00:00:00").unwrap(),
            "2030-01-01T00:00:00+00:00"
        );
        assert_eq!(at("soon"), None);
    }
}
