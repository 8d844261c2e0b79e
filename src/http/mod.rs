//! Herald's HTTP surface, composed in one place: the job API, the
//! WebSocket, the demo page, the dashboard, health and metrics for `herald
//! run` and `herald sidecar` ([`Surface`]); metrics, health and the
//! dashboard for the worker ([`worker_router`]). [`serve`] runs any of them
//! with the limits that keep unauthenticated clients cheap.

pub mod demo;
mod health;
pub mod openapi;
pub mod probe;
mod serve;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

pub use serve::{ServeLimits, serve};

use crate::config::{Settings, SidecarSettings};
use crate::dashboard::DashboardState;
use crate::queue::JobQueue;
use crate::sidecar::SidecarState;
use crate::store::Store;

/// Binds `address`; an error names the setting it came from.
pub async fn bind(address: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("could not listen on {address} ({key})"))
}

/// The limits before authentication, as `[sidecar]` sets them for every
/// listener.
pub fn limits(sidecar: &SidecarSettings) -> ServeLimits {
    ServeLimits {
        header_timeout: sidecar.header_timeout,
        max_pending: sidecar.max_pending_connections,
        grace: sidecar.shutdown_timeout,
    }
}

/// What the front listener (`sidecar.listen`) of `herald run` and `herald
/// sidecar` serves.
pub struct Surface<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub queue: &'a JobQueue,
    pub sockets: &'a SidecarState,
    pub dashboard: &'a DashboardState,
    /// Whether the demo page is on by default (`herald run`) or not.
    pub demo: demo::Mode,
    /// The bound address: its being loopback or not decides the API's
    /// access rule and whether the demo mints tokens.
    pub address: SocketAddr,
}

impl Surface<'_> {
    /// Every route of the front listener.
    pub fn router(&self) -> anyhow::Result<Router> {
        let settings = self.settings;
        let api = crate::api::ApiState::new(settings, self.store.clone(), self.queue.clone());
        let dashboard = self.dashboard.clone();
        Ok(crate::sidecar::router(self.sockets.clone())
            .merge(health::sockets_router(self.sockets.clone()))
            .merge(crate::api::router(api, &settings.api))
            .merge(openapi::router())
            .merge(demo::routes(settings, self.demo, self.address)?)
            .merge(crate::dashboard::router(
                dashboard,
                settings.dashboard.enabled,
            )))
    }
}

/// The worker's listener (`worker.listen`): `/metrics`, `/healthz` and the
/// dashboard.
pub fn worker_router(settings: &Settings, dashboard: DashboardState) -> Router {
    health::process_router().merge(crate::dashboard::router(
        dashboard,
        settings.dashboard.enabled,
    ))
}

/// Serves `app` on `listener` until `shutdown` completes, then closes every
/// WebSocket of `sockets` with 1001 and waits for them (at most
/// `sidecar.shutdown_timeout`).
pub async fn serve_with_sockets<F>(
    listener: TcpListener,
    sockets: SidecarState,
    app: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stopping = sockets.stopping();
    let stopped = stopping.clone();
    let settings = sockets.settings();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = stopped.cancelled() => {}
        }
    };
    serve(listener, app, limits(settings), shutdown).await?;
    stopping.cancel();
    sockets.wait_idle(settings.shutdown_timeout).await;
    Ok(())
}

/// The WebSocket with health and metrics alone, as tests and embedders
/// serve it.
pub async fn serve_sockets<F>(
    listener: TcpListener,
    sockets: SidecarState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app =
        crate::sidecar::router(sockets.clone()).merge(health::sockets_router(sockets.clone()));
    serve_with_sockets(listener, sockets, app, shutdown).await
}
