//! Types for clients, generated from the Rust types of [`super::protocol`]:
//! the WebSocket events and client messages as one JSON Schema (draft
//! 2020-12) and as TypeScript declarations. The checked-in copies under
//! `schemas/` are compared with these by a test (`HERALD_BLESS=1` rewrites).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::protocol::{ClientMessage, ServerEvent};

/// The definitions of `T` and everything it uses, under `$defs` names.
fn definitions<T: JsonSchema>(settings: SchemaSettings) -> Map<String, Value> {
    let mut generator = settings.into_generator();
    generator.subschema_for::<T>();
    generator.take_definitions(true)
}

/// One schema document whose `$defs` hold `ServerEvent` (what the server
/// sends), `ClientMessage` (what a client may send) and their parts.
pub fn json_schema() -> Value {
    let mut defs = definitions::<ServerEvent>(SchemaSettings::draft2020_12().for_serialize());
    defs.extend(definitions::<ClientMessage>(
        SchemaSettings::draft2020_12().for_deserialize(),
    ));
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Herald notifications WebSocket (GET /ws/notifications/)",
        "description": "Generated from herald's Rust types (src/sidecar/protocol.rs); see docs/notifications.md.",
        "$defs": defs,
    })
}

/// TypeScript declarations: one exported type per `$defs` entry.
pub fn typescript() -> String {
    let schema = json_schema();
    let mut out = String::from(
        "// Generated from herald's Rust types (src/sidecar/protocol.rs) by\n\
         // herald::sidecar::schema; do not edit. See docs/notifications.md.\n",
    );
    if let Some(defs) = schema["$defs"].as_object() {
        for (name, def) in defs {
            out.push('\n');
            out.push_str(&doc_comment(def, ""));
            let ts = ts_type(def, "");
            let gap = if ts.starts_with('\n') { "" } else { " " };
            out.push_str(&format!("export type {name} ={gap}{ts};\n"));
        }
    }
    out
}

fn doc_comment(schema: &Value, indent: &str) -> String {
    match schema.get("description").and_then(Value::as_str) {
        Some(text) => {
            let mut out = format!("{indent}/**\n");
            for line in text.lines() {
                out.push_str(&format!("{indent} * {line}\n").replace(" \n", "\n"));
            }
            out.push_str(&format!("{indent} */\n"));
            out
        }
        None => String::new(),
    }
}

/// The TypeScript type of a (generated, so limited) JSON Schema.
fn ts_type(schema: &Value, indent: &str) -> String {
    let Some(map) = schema.as_object() else {
        return if schema == &Value::Bool(false) {
            "never".into()
        } else {
            "unknown".into()
        };
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        return reference
            .rsplit('/')
            .next()
            .unwrap_or("unknown")
            .to_string();
    }
    if let Some(constant) = map.get("const") {
        return constant.to_string();
    }
    if let Some(values) = map.get("enum").and_then(Value::as_array) {
        return join(values.iter().map(Value::to_string));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = map.get(key).and_then(Value::as_array) {
            let inner = format!("{indent}  ");
            let mut out = String::new();
            for option in options {
                out.push('\n');
                out.push_str(&doc_comment(option, &inner));
                out.push_str(&format!("{inner}| {}", ts_type(option, &inner)));
            }
            return out;
        }
    }
    match map.get("type") {
        Some(Value::Array(types)) => join(types.iter().map(|t| {
            let mut single = map.clone();
            single.insert("type".into(), t.clone());
            ts_type(&Value::Object(single), indent)
        })),
        Some(Value::String(kind)) => match kind.as_str() {
            "string" => "string".into(),
            "integer" | "number" => "number".into(),
            "boolean" => "boolean".into(),
            "null" => "null".into(),
            "array" => {
                let items = map
                    .get("items")
                    .map_or("unknown".into(), |i| ts_type(i, indent));
                format!("Array<{items}>")
            }
            "object" => ts_object(map, indent),
            _ => "unknown".into(),
        },
        _ => "unknown".into(),
    }
}

fn ts_object(map: &Map<String, Value>, indent: &str) -> String {
    let properties = match map.get("properties").and_then(Value::as_object) {
        Some(properties) if !properties.is_empty() => properties,
        // Generated objects without properties are empty structs.
        _ => return "Record<string, never>".into(),
    };
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let inner = format!("{indent}  ");
    let mut out = String::from("{\n");
    for (name, property) in properties {
        out.push_str(&doc_comment(property, &inner));
        let optional = if required.contains(&name.as_str()) {
            ""
        } else {
            "?"
        };
        out.push_str(&format!(
            "{inner}{name}{optional}: {};\n",
            ts_type(property, &inner)
        ));
    }
    out.push_str(indent);
    out.push('}');
    out
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(" | ")
}
