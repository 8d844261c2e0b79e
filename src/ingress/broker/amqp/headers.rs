//! An AMQP delivery as the ingress's core reads it: py-amqp writes Celery's
//! protocol-2 headers as an AMQP field table (strings as long strings,
//! `None` as void, lists as arrays, dicts as tables, ints and floats as
//! themselves), which is turned back into the JSON values the Redis
//! transport would have carried; the body and its content type are the
//! frame's own.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};

use crate::ingress::message::{Parts, Refused};

/// The delivery's parts for [`crate::ingress::message::decode_parts`].
pub(super) fn parts(delivery: &Delivery) -> Parts<'_> {
    let properties = &delivery.properties;
    let headers = properties.headers().as_ref().map(table).unwrap_or_default();
    let body = match properties.content_encoding().as_ref().map(|e| e.as_str()) {
        None | Some("utf-8" | "utf8" | "binary") => Ok(delivery.data.as_slice()),
        Some(other) => Err(Refused {
            id: None,
            task: None,
            exc_type: "ValueError",
            reason: format!("content encoding {other:?} is not supported"),
            reply_to: None,
        }),
    };
    Parts {
        body,
        content_type: properties.content_type().as_ref().map(|t| t.as_str()),
        headers,
        correlation_id: properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string()),
        redelivered: delivery.redelivered,
        reply_to: properties
            .reply_to()
            .as_ref()
            .map(|queue| queue.to_string()),
    }
}

/// A field table as a JSON object.
pub(super) fn table(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.to_string(), json_of(value)))
        .collect()
}

/// One field value as JSON: text as text (bytes that are not UTF-8 as
/// kombu would refuse them: lossily), a timestamp as its seconds.
fn json_of(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => {
            json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(json_of).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => Value::Object(table(t)),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    #[test]
    fn celerys_header_types_read_as_json() {
        let mut nested = FieldTable::default();
        nested.insert(ShortString::from("k"), AMQPValue::LongInt(3));
        let mut headers = FieldTable::default();
        headers
            .insert(
                "task".into(),
                AMQPValue::LongString(LongString::from("apps.t")),
            )
            .insert("eta".into(), AMQPValue::Void)
            .insert("retries".into(), AMQPValue::LongLongInt(0))
            .insert("ignore_result".into(), AMQPValue::Boolean(false))
            .insert(
                "timelimit".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![
                    AMQPValue::Void,
                    AMQPValue::Double(2.5),
                ])),
            )
            .insert("stamps".into(), AMQPValue::FieldTable(nested));
        assert_eq!(
            Value::Object(table(&headers)),
            json!({"task": "apps.t", "eta": null, "retries": 0, "ignore_result": false,
                   "timelimit": [null, 2.5], "stamps": {"k": 3}})
        );
    }
}
