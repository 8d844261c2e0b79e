//! The OpenAPI 3.1 document of herald's HTTP API (the job routes and the
//! dashboard's figures), served at `GET /api/openapi.json`
//! and checked in as `docs/openapi.json` (a test fails when that copy is
//! stale; `HERALD_BLESS=1 cargo test --test herald openapi` rewrites it).
//! utoipa derives the routes and bodies from the handlers and their types;
//! the payload schemas are the job catalog's, as schemars generates them.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{ErrorBody, Refused};
use crate::jobs::catalog;

/// The name of the security scheme the job routes require.
const SCHEME: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "herald job API",
        description = "Submit, read and retry herald's background jobs. Every error answer is \
            `{\"error\": \"...\"}` with the reason. See docs/jobs.md."
    ),
    paths(
        crate::api::create,
        crate::api::create_batch,
        crate::api::list,
        crate::api::show,
        crate::api::retry,
        crate::api::revoke::revoke,
        crate::dashboard::api_stats,
        serve
    ),
    components(schemas(ErrorBody), responses(Refused)),
    modifiers(&ApiKey),
    tags(
        (name = "jobs", description = "The job API; every route needs the API key."),
        (name = "celery", description = "Celery's tasks, by their ids; the API key."),
        (name = "dashboard", description = "The operations dashboard's figures (docs/dashboard.md); \
            the API key, or the dashboard's session cookie."),
        (name = "meta", description = "This description; no key needed."),
    )
)]
struct ApiDoc;

/// Adds the bearer scheme named by the routes' `security`.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`Authorization: Bearer <api.key>` (set with `HERALD_API__KEY`). With no key \
                 configured every job route answers 401, except in development mode \
                 (`herald run --dev`), where clients on herald's own machine need no key.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The document as JSON: what utoipa derives, plus the catalog's payload
/// schemas, with `SubmitRequest` split into one variant per kind.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        add_catalog(schemas);
        schemas.sort_keys();
    }
    doc
}

/// Adds each kind's payload schema under its type name (`Notify`, ...) and
/// a `Submit<Type>` variant of the derived `SubmitRequest` whose `kind` is
/// that kind and whose `payload` is that schema; `SubmitRequest` becomes
/// the choice of the variants, discriminated by `kind`.
fn add_catalog(schemas: &mut Map<String, Value>) {
    let Some(Value::Object(base)) = schemas.shift_remove("SubmitRequest") else {
        return;
    };
    let mut variants = Vec::new();
    let mut mapping = Map::new();
    for entry in catalog::entries() {
        let Value::Object(mut payload) = entry.schema else {
            continue;
        };
        // The document's dialect (OpenAPI 3.1's, JSON Schema 2020-12) applies.
        payload.shift_remove("$schema");
        let name = match payload.get("title").and_then(Value::as_str) {
            Some(title) => title.to_string(),
            None => entry.kind.to_string(),
        };
        schemas.insert(name.clone(), Value::Object(payload));

        let mut variant = base.clone();
        variant.insert(
            "description".into(),
            json!(format!("A job of kind `{}`.", entry.kind)),
        );
        if let Some(Value::Object(properties)) = variant.get_mut("properties") {
            properties.insert(
                "kind".into(),
                json!({"type": "string", "const": entry.kind}),
            );
            properties.insert("payload".into(), schema_ref(&name));
        }
        if let Some(Value::Array(required)) = variant.get_mut("required") {
            required.push(json!("payload"));
        }
        let variant_name = format!("Submit{name}");
        schemas.insert(variant_name.clone(), Value::Object(variant));
        variants.push(schema_ref(&variant_name));
        mapping.insert(entry.kind.into(), schema_ref(&variant_name)["$ref"].clone());
    }
    let mut choice = Map::new();
    if let Some(description) = base.get("description") {
        choice.insert("description".into(), description.clone());
    }
    choice.insert("oneOf".into(), Value::Array(variants));
    choice.insert(
        "discriminator".into(),
        json!({"propertyName": "kind", "mapping": mapping}),
    );
    schemas.insert("SubmitRequest".into(), Value::Object(choice));
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Built once: the document depends only on the code.
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "This document.", body = Object)),
)]
pub(crate) async fn serve() -> Response {
    axum::Json(&*DOCUMENT).into_response()
}

/// `GET /api/openapi.json`: public, beside the keyed routes.
pub fn router() -> axum::Router {
    axum::Router::new().route("/api/openapi.json", axum::routing::get(serve))
}
