//! `herald run`: everything in one process — the worker and its scheduler,
//! the WebSocket sidecar and the job API, and the Celery ingress when a
//! broker is configured — on the configured layer (the
//! in-memory one by default) and the embedded SQLite store, migrated at
//! start. `main` only calls [`run`].

use anyhow::Context;

use crate::config::Settings;
use crate::dashboard::DashboardState;
use crate::fleet::{Heartbeat, Role};
use crate::ingress::Ingress;
use crate::queue::JobQueue;
use crate::sidecar::{self, SidecarState};
use crate::worker::Worker;

/// Runs every role until `shutdown`, then stops them in order: the server
/// (clients get 1001), then the worker (running jobs finish).
pub async fn run<F>(settings: &Settings, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    crate::telemetry::metrics::prometheus();
    let secret = settings.secret()?;
    let store = crate::commands::connect_store(settings).await?;
    store.migrate().await.context("migration failed")?;
    let layer =
        crate::layer::build(&settings.layer).context("could not build the channel layer")?;
    let queue = JobQueue::connect(settings)
        .await
        .context("could not open the job queue")?;
    let (listener, api) =
        sidecar::bind_with_api(settings, &store, &queue, sidecar::demo::Mode::AllInOne).await?;
    let dashboard = DashboardState::new(settings, store.clone(), queue.clone(), Some(&secret));
    let api = api.merge(crate::dashboard::router(
        dashboard.clone(),
        settings.dashboard.enabled,
    ));
    let worker = Worker::start(settings, store.clone(), layer.clone(), queue.clone()).await?;
    let ingress = Ingress::start(settings, store.clone(), queue.clone()).await?;
    tracing::info!(address = %listener.local_addr()?, queue = queue.name(), "herald running");
    let state = SidecarState::new(layer, store.clone(), secret, settings.sidecar.clone());
    let heartbeat = Heartbeat::start(
        store.clone(),
        Role::Run,
        &settings.dashboard,
        Some(state.clone()),
    );
    let shutdown = async move {
        shutdown.await;
        dashboard.stop_streams();
    };
    let served = sidecar::serve_with(listener, state, api, shutdown).await;
    if let Some(ingress) = ingress {
        ingress.shutdown(settings.queue.shutdown_timeout).await;
    }
    worker.shutdown(settings.queue.shutdown_timeout).await;
    heartbeat.stop().await;
    queue.close().await;
    store.close().await;
    served?;
    Ok(())
}
