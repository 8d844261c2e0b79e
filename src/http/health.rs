//! What load balancers and Prometheus ask every listener: `/healthz` (the
//! process answers), `/readyz` (the database migrated and the channel layer
//! reachable) and `/metrics` (the sidecar's counters, when the listener has
//! sockets, then the process-wide ones).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::layer::ChannelLayer;
use crate::sidecar::SidecarState;
use crate::store::Store;

/// How long a readiness check may take.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// `/healthz` and `/metrics` with the process-wide counters only (the
/// worker's listener).
pub(super) fn process_router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|| async { crate::telemetry::metrics::prometheus().render() }),
        )
}

/// `/healthz`, `/readyz` and `/metrics` of a listener that holds sockets.
pub(super) fn sockets_router(sockets: SidecarState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(sockets)
}

/// 200 when the database answers with migrations applied and the channel
/// layer answers a group_send (to a group nobody joins); 503 naming what
/// is not ready otherwise (the cause goes to the log, not the answer).
async fn readyz(State(sockets): State<SidecarState>) -> Response {
    let checks = async { tokio::join!(database(sockets.store()), layer(sockets.layer())) };
    let problems: Vec<&str> = match tokio::time::timeout(READY_TIMEOUT, checks).await {
        Ok((database, layer)) => [database, layer]
            .into_iter()
            .filter_map(Result::err)
            .collect(),
        Err(_) => vec!["readiness checks timed out"],
    };
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text = format!("{}\n", problems.join("\n"));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn database(store: &Store) -> Result<(), &'static str> {
    match store.applied_migrations().await {
        Ok(applied) if applied.is_empty() => Err("database: not migrated (run herald migrate)"),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            Err("database: unavailable")
        }
    }
}

async fn layer(layer: &Arc<dyn ChannelLayer>) -> Result<(), &'static str> {
    let mut probe = crate::layer::Message::new();
    probe.insert("type".into(), "herald.readyz".into());
    layer
        .group_send("herald_readyz", probe)
        .await
        .map(drop)
        .map_err(|error| {
            tracing::warn!(%error, "readiness: the channel layer does not answer");
            "channel layer: unavailable"
        })
}

/// The sidecar's counters, then the process-wide ones (channel layer,
/// publisher, jobs) from the global recorder.
async fn prometheus(State(sockets): State<SidecarState>) -> impl IntoResponse {
    let mut text = sockets.prometheus_text();
    text.push_str(&crate::telemetry::metrics::prometheus().render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
