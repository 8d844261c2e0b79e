//! The operations dashboard: `GET /dashboard`, one HTML page with a small
//! script and the vendored uPlot charting library (all compiled into the
//! binary), that updates itself from a server-sent event stream of the
//! whole fleet's figures ([`stats`]), read from the database and Redis.
//! The same figures as JSON at `GET /api/stats`. Its buttons retry,
//! discard and cancel jobs and pause or resume kinds. Access: [`session`].
//! Served by `herald run`, `herald sidecar` and `herald worker` (on
//! `worker.listen`). See docs/dashboard.md.
//!
//! Parts: the state and the router here; the page (`assets`), signing in
//! (`sign_in`), the figures' stream and `/api/stats` (`figures`), the
//! history search (`history`), the buttons (`actions`).

pub mod session;
pub mod stats;

mod actions;
mod assets;
mod figures;
mod history;
mod sign_in;
mod throttle;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub(crate) use figures::{__path_api_stats, api_stats};

use crate::api::error;
use crate::config::Settings;
use crate::queue::JobQueue;
use crate::store::Store;
use actions::{job_action, kind_action};
use assets::{asset, page};
use figures::events;
use history::history;
use session::Access;
use sign_in::{session_get, sign_in, sign_out};
use stats::Collector;

/// What the dashboard's routes need; cheap to clone.
#[derive(Clone)]
pub struct DashboardState(Arc<Shared>);

struct Shared {
    store: Store,
    /// Where the dashboard reads (see [`reading_pool`]).
    reads: Store,
    queue: JobQueue,
    access: Access,
    /// Refused sign-ins per client address.
    throttle: throttle::Throttle,
    /// Revokes a Celery task's job (its Revoke button).
    revoker: crate::ingress::revoke::Revoker,
    collector: Collector,
    refresh: std::time::Duration,
    /// Ends every event stream (on shutdown).
    stop: CancellationToken,
}

impl DashboardState {
    /// The dashboard of `settings` on `store` and `queue`; `secret` is
    /// herald's signing secret (for development-mode sessions).
    pub fn new(
        settings: &Settings,
        store: Store,
        queue: JobQueue,
        secret: Option<&secrecy::SecretString>,
    ) -> DashboardState {
        let settings = Arc::new(settings.clone());
        let reads = reading_pool(&settings).unwrap_or_else(|| store.clone());
        // The settings were checked at start: a result backend that does
        // not build here is none (revokes are still recorded and honoured).
        let results = crate::ingress::result_backend(&settings.celery, &store)
            .ok()
            .flatten();
        DashboardState(Arc::new(Shared {
            access: Access::new(&settings, secret),
            throttle: throttle::Throttle::default(),
            revoker: crate::ingress::revoke::Revoker::new(
                store.clone(),
                results,
                settings.celery.revoke_expires,
            ),
            collector: Collector::new(reads.clone(), settings.clone()),
            reads,
            refresh: settings.dashboard.refresh_interval,
            store,
            queue,
            stop: CancellationToken::new(),
        }))
    }

    /// Ends every open event stream (call on shutdown, so the server's
    /// graceful stop need not wait for them).
    pub fn stop_streams(&self) {
        self.0.stop.cancel();
    }

    /// How many reads of the fleet this dashboard made, and how long they
    /// took together.
    pub fn read_cost(&self) -> stats::ReadCost {
        self.0.collector.cost()
    }

    /// The figures now (as `GET /api/stats` answers).
    pub async fn stats(&self) -> Arc<stats::Stats> {
        self.0.collector.latest().await.0
    }
}

/// Connections the dashboard reads the fleet on (PostgreSQL).
const READING_CONNECTIONS: u32 = 2;

/// On PostgreSQL, a small pool of the dashboard's own for its reads
/// (`application_name` `herald-dashboard`), opened on first use: an open
/// page never takes a connection the worker's batches wait for. On SQLite
/// (one file, one writer; reads do not block it in WAL mode) the store's
/// pool serves.
fn reading_pool(settings: &Settings) -> Option<Store> {
    let url = settings.database_url().ok()?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options = crate::store::postgres_options(&url)
        .ok()?
        .application_name("herald-dashboard");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(READING_CONNECTIONS)
        .acquire_timeout(settings.database.acquire_timeout)
        .connect_lazy_with(options);
    Some(Store::Postgres(pool))
}

/// The page, its assets, the session, the event stream, `/api/stats`, the
/// history search and the buttons' routes; none when
/// `dashboard.enabled` is off.
pub fn router(state: DashboardState, enabled: bool) -> Router {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/assets/{name}", get(asset))
        .route(
            "/dashboard/session",
            get(session_get).post(sign_in).delete(sign_out),
        )
        .route("/dashboard/events", get(events))
        .route("/dashboard/history", get(history))
        .route("/dashboard/jobs/{id}/{action}", post(job_action))
        .route("/dashboard/kinds/{kind}/{action}", post(kind_action))
        .route("/api/stats", get(api_stats))
        .with_state(state)
}

/// The request's TCP peer, as the accept loop recorded it (none: not
/// local).
pub(crate) struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(Peer(peer.map(|info| info.0)))
    }
}

fn unavailable(e: crate::store::StoreError) -> Response {
    tracing::warn!(error = %e, "dashboard: database error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable; try again",
    )
}
