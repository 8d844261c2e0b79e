//! Building and running each long-lived command: the settings as loaded and
//! checked by every role ([`load_settings`]), then `herald run` ([`run`]:
//! the worker, the Celery ingress and the whole HTTP surface in one
//! process), `herald sidecar` ([`sidecar`]) and `herald worker`
//! ([`worker`]). `main` only parses arguments and calls these.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Settings};
use crate::dashboard::DashboardState;
use crate::fleet::{Heartbeat, Role};
use crate::http::{Surface, demo};
use crate::ingress::Ingress;
use crate::layer::ChannelLayer;
use crate::queue::JobQueue;
use crate::sidecar::SidecarState;
use crate::store::Store;
use crate::worker::Worker;

/// Loads the configuration ([`Settings::load`]) and runs every role's own
/// checks on it ([`check_settings`]).
pub fn load_settings(file: Option<&Path>) -> Result<Settings, ConfigError> {
    let settings = Settings::load(file)?;
    check_settings(&settings)?;
    Ok(settings)
}

/// The checks that need a role's knowledge: job kinds (the catalog), cron
/// expressions (the schedules), the resume page (the sidecar), Celery's
/// routes (the ingress).
pub fn check_settings(settings: &Settings) -> Result<(), ConfigError> {
    crate::sidecar::check_settings(&settings.sidecar)?;
    crate::jobs::schedule::check_settings(&settings.worker)?;
    crate::jobs::catalog::check_queue_settings(&settings.queue)?;
    crate::ingress::check_settings(&settings.celery)
}

/// `herald run`: every role until `shutdown`, on the configured layer (the
/// in-memory one by default) and store, migrated at start. Stops them in
/// order: the server (clients get 1001), the ingress, then the worker
/// (running jobs finish).
pub async fn run<F>(settings: &Settings, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    crate::telemetry::metrics::prometheus();
    let store = crate::connect::store(settings).await?;
    store.migrate().await.context("migration failed")?;
    let layer = crate::connect::layer(settings)?;
    let queue = crate::connect::queue(settings).await?;
    let listener = crate::http::bind(&settings.sidecar.listen, "sidecar.listen").await?;
    let worker = Worker::start(settings, store.clone(), layer.clone(), queue.clone()).await?;
    let ingress = Ingress::start(settings, store.clone(), queue.clone()).await?;
    let front = Front::new(
        settings,
        &store,
        &queue,
        layer,
        listener,
        demo::Mode::AllInOne,
    )?;
    tracing::info!(address = %front.address, queue = queue.name(), "herald running");
    let (served, heartbeat) = front.serve(settings, &store, Role::Run, shutdown).await;
    let running = Running {
        ingress,
        worker,
        heartbeat,
    };
    running.stop(settings, queue, store).await;
    served?;
    Ok(())
}

/// `herald sidecar`: the WebSocket, the job API, the demo page (when asked
/// for) and the dashboard on `sidecar.listen`, until `shutdown`.
pub async fn sidecar<F>(settings: &Settings, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Install the metrics recorder before anything records.
    crate::telemetry::metrics::prometheus();
    let layer = crate::connect::shared_layer(settings, "sidecar", "worker")?;
    let store = crate::connect::store(settings).await?;
    let queue = crate::connect::queue(settings).await?;
    let listener = crate::http::bind(&settings.sidecar.listen, "sidecar.listen").await?;
    let front = Front::new(
        settings,
        &store,
        &queue,
        layer,
        listener,
        demo::Mode::SidecarOnly,
    )?;
    tracing::info!(address = %front.address, "sidecar listening");
    let (served, heartbeat) = front.serve(settings, &store, Role::Sidecar, shutdown).await;
    served?;
    heartbeat.stop().await;
    queue.close().await;
    store.close().await;
    tracing::info!("sidecar stopped");
    Ok(())
}

/// The front listener (`sidecar.listen`) of `run` and `sidecar`, with the
/// sockets and the dashboard behind its routes.
struct Front {
    listener: TcpListener,
    address: SocketAddr,
    app: Router,
    sockets: SidecarState,
    dashboard: DashboardState,
}

impl Front {
    fn new(
        settings: &Settings,
        store: &Store,
        queue: &JobQueue,
        layer: Arc<dyn ChannelLayer>,
        listener: TcpListener,
        demo: demo::Mode,
    ) -> anyhow::Result<Front> {
        let secret = settings.secret()?;
        let dashboard = DashboardState::new(settings, store.clone(), queue.clone(), Some(&secret));
        let sockets = SidecarState::new(layer, store.clone(), secret, settings.sidecar.clone());
        let address = listener.local_addr()?;
        let app = Surface {
            settings,
            store,
            queue,
            sockets: &sockets,
            dashboard: &dashboard,
            demo,
            address,
        }
        .router()?;
        Ok(Front {
            listener,
            address,
            app,
            sockets,
            dashboard,
        })
    }

    /// Serves until `shutdown` (the dashboard's live streams end with it),
    /// this process's heartbeat beating meanwhile. Answers how serving
    /// ended and the heartbeat, which the caller stops once its other roles
    /// have.
    async fn serve<F>(
        self,
        settings: &Settings,
        store: &Store,
        role: Role,
        shutdown: F,
    ) -> (std::io::Result<()>, Heartbeat)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sockets = Some(self.sockets.clone());
        let heartbeat = Heartbeat::start(store.clone(), role, &settings.dashboard, sockets);
        let dashboard = self.dashboard;
        let shutdown = async move {
            shutdown.await;
            dashboard.stop_streams();
        };
        let served =
            crate::http::serve_with_sockets(self.listener, self.sockets, self.app, shutdown).await;
        (served, heartbeat)
    }
}

/// `herald worker`: the worker and the Celery ingress, with metrics and the
/// dashboard on `worker.listen` when set, until `shutdown`.
pub async fn worker<F>(settings: &Settings, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    crate::telemetry::metrics::prometheus();
    let layer = crate::connect::shared_layer(settings, "worker", "sidecar")?;
    let store = crate::connect::store(settings).await?;
    store.migrate().await?;
    let queue = crate::connect::queue(settings).await?;
    let worker = Worker::start(settings, store.clone(), layer, queue.clone()).await?;
    let heartbeat = Heartbeat::start(store.clone(), Role::Worker, &settings.dashboard, None);
    let ingress = Ingress::start(settings, store.clone(), queue.clone()).await?;
    let listen = &settings.worker.listen;
    if !listen.is_empty() {
        let listener = crate::http::bind(listen, "worker.listen").await?;
        tracing::info!(address = %listener.local_addr()?, "worker metrics listening");
        let dashboard = DashboardState::new(settings, store.clone(), queue.clone(), None);
        let app = crate::http::worker_router(settings, dashboard);
        let limits = crate::http::limits(&settings.sidecar);
        tokio::spawn(crate::http::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
    }
    shutdown.await;
    let running = Running {
        ingress,
        worker,
        heartbeat,
    };
    running.stop(settings, queue, store).await;
    Ok(())
}

/// The worker's side of a process, stopped together.
struct Running {
    ingress: Option<Ingress>,
    worker: Worker,
    heartbeat: Heartbeat,
}

impl Running {
    /// Stops the ingress first (it feeds the queue), then the worker
    /// (running jobs finish), the heartbeat, and closes the queue and store.
    async fn stop(self, settings: &Settings, queue: JobQueue, store: Store) {
        let limit = settings.queue.shutdown_timeout;
        if let Some(ingress) = self.ingress {
            ingress.shutdown(limit).await;
        }
        self.worker.shutdown(limit).await;
        self.heartbeat.stop().await;
        queue.close().await;
        store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_pass_every_role() {
        check_settings(&Settings::defaults()).unwrap();
    }

    #[test]
    fn each_role_names_the_key_it_refuses() {
        let mut settings = Settings::defaults();
        settings.sidecar.replay_limit = 501;
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "sidecar.replay_limit"
        );
        let mut settings = Settings::defaults();
        settings.queue.concurrency.insert("mail".into(), 3);
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "queue.concurrency.mail");
        assert!(error.reason.contains("known kinds"), "{error}");
        let mut settings = Settings::defaults();
        settings.queue.attempts.insert("mail".into(), 3);
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "queue.attempts.mail"
        );
        let mut settings = Settings::defaults();
        settings.worker.overdue_schedule = "hourly".into();
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "worker.overdue_schedule"
        );
    }
}
