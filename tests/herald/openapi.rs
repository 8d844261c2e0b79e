//! The checked-in `docs/openapi.json` matches the document the code
//! generates, and every reference in it resolves; run with `HERALD_BLESS=1`
//! to rewrite it after changing the API or a job kind.

use std::path::PathBuf;

use herald::http::openapi;
use serde_json::Value;

pub(crate) fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

#[test]
fn openapi_document_is_current() {
    let generated = serde_json::to_string_pretty(&openapi::document()).unwrap() + "\n";
    let path = checked_in_path();
    if std::env::var("HERALD_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale: run HERALD_BLESS=1 cargo test --test herald openapi",
        path.display()
    );
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target);
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = openapi::document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').unwrap_or(target);
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
}

#[test]
fn each_kind_has_its_payload_schema() {
    let doc = openapi::document();
    let schemas = &doc["components"]["schemas"];
    let mapping = schemas["SubmitRequest"]["discriminator"]["mapping"]
        .as_object()
        .unwrap();
    assert_eq!(
        mapping.keys().map(String::as_str).collect::<Vec<_>>(),
        herald::jobs::KINDS
    );
    let variant = &schemas["SubmitNotify"];
    assert_eq!(variant["properties"]["kind"]["const"], "notify");
    assert_eq!(
        variant["properties"]["payload"]["$ref"],
        "#/components/schemas/Notify"
    );
    assert_eq!(variant["additionalProperties"], false);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}
