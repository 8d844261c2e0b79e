//! The decoding tests, on the messages the real packages wrote
//! (`tests/fixtures/celery/redis-broker-messages.json`).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{TaskMessage, decode, parse_time};

const VECTORS: &str = include_str!("../../../tests/fixtures/celery/redis-broker-messages.json");

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
