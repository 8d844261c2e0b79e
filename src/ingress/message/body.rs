//! A task message's body as Celery serialized it: JSON (with kombu's typed
//! values made plain) or msgpack; pickle and other content types are
//! refused, and so is a compressed body.

use serde_json::{Map, Value};

use super::Refused;

/// The body's bytes (after the broker's body encoding) read by its content
/// type, unless Celery compressed them.
pub(super) fn value(
    bytes: &[u8],
    content_type: Option<&str>,
    compression: &Option<Value>,
) -> Result<Value, Refused> {
    if let Some(compression) = compression
        && !compression.is_null()
    {
        return Err(Refused::unreadable(format!(
            "compressed task messages ({compression}) are not supported: \
             unset task_compression for herald's tasks"
        )));
    }
    let content_type = content_type.unwrap_or("application/json");
    match content_type {
        "application/json" => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| Refused::unreadable(format!("the JSON body does not parse: {e}")))?;
            // Only a body that has kombu's typed values needs the walk.
            if bytes.windows(8).any(|w| w == b"__type__") {
                plain(value)
            } else {
                Ok(value)
            }
        }
        "application/x-msgpack" => {
            let value: Value = rmp_serde::from_slice(bytes).map_err(|e| {
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
