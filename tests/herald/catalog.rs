//! jobs/ holds, per kind, the schema generated from the Rust type and an
//! example that the type accepts; stale files fail this test.

use std::path::PathBuf;

use herald::jobs::{KINDS, catalog, parse};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("jobs")
        .join(name)
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

#[test]
fn catalog_files_are_current() {
    let write = std::env::var("HERALD_WRITE_CATALOG").is_ok();
    let entries = catalog::entries();
    assert_eq!(entries.iter().map(|e| e.kind).collect::<Vec<_>>(), KINDS);
    for entry in entries {
        for (name, value) in [
            (format!("{}.schema.json", entry.kind), &entry.schema),
            (format!("{}.example.json", entry.kind), &entry.example),
        ] {
            if write {
                std::fs::write(path(&name), pretty(value)).unwrap();
            }
            let on_disk = std::fs::read_to_string(path(&name)).unwrap_or_else(|_| {
                panic!("jobs/{name} missing: run HERALD_WRITE_CATALOG=1 cargo test catalog")
            });
            assert_eq!(
                on_disk,
                pretty(value),
                "jobs/{name} is stale: run HERALD_WRITE_CATALOG=1 cargo test catalog"
            );
        }
        parse(entry.kind, entry.example.clone()).expect("the example is a valid payload");
    }
}
