//! The checked-in client types (`schemas/websocket.schema.json` and
//! `schemas/websocket.d.ts`) match what the Rust types generate; run with
//! `HERALD_BLESS=1` to rewrite them after changing the protocol.

use std::path::PathBuf;

use herald::sidecar::schema;

fn check(file: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    if std::env::var("HERALD_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale: run HERALD_BLESS=1 cargo test --test sidecar schema",
        path.display()
    );
}

#[test]
fn json_schema_is_current() {
    let text = serde_json::to_string_pretty(&schema::json_schema()).unwrap() + "\n";
    check("websocket.schema.json", &text);
}

#[test]
fn typescript_is_current() {
    check("websocket.d.ts", &schema::typescript());
}

#[test]
fn the_schema_describes_both_directions() {
    let schema = schema::json_schema();
    let defs = schema["$defs"].as_object().unwrap();
    for name in [
        "ServerEvent",
        "ClientMessage",
        "NotificationPayload",
        "MarkedRead",
    ] {
        assert!(defs.contains_key(name), "missing {name}");
    }
    let ts = schema::typescript();
    assert!(ts.contains("export type ServerEvent ="), "{ts}");
    assert!(ts.contains("\"notification\""), "{ts}");
}
