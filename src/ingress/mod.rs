//! The Celery drop-in: task messages the application's unchanged `.delay()`
//! and `apply_async()` calls put on Celery's broker (Redis or RabbitMQ) are
//! taken off
//! herald's queues (`celery.queues`), recorded in herald's ledger as the job
//! kinds their task names map to (`celery.tasks`), and only then
//! acknowledged. The worker runs them like any job and writes each one's
//! end to Celery's result backend, so `AsyncResult.get()` works unchanged.
//!
//! Nothing lost: a message stays unacknowledged (in kombu's `unacked`
//! bookkeeping on Redis, on its channel on AMQP) until its job is in the
//! ledger, and what a dead process held goes back to its queue (by the
//! restore sweep on Redis, by the broker itself on AMQP). Nothing run twice: the Celery task id is the job's dedup key
//! (`celery:<id>`), so a message taken again records nothing new.
//!
//! The core is broker-agnostic: decoding a task message (`message`),
//! routing its task name to a job kind (`route`), planning it (`plan`),
//! recording a batch in the ledger (`round`), and Celery's results
//! (`result`). Each broker and each result backend has its own room:
//! `broker::redis` (kombu's Redis transport), `broker::amqp` (RabbitMQ),
//! `result::redis`; `consume` holds each broker's loop.

pub mod broker;
pub mod control;
pub mod message;
pub mod result;
pub mod revoke;
pub mod route;

mod consume;
mod plan;
mod round;
mod settings;

use std::sync::Arc;

use secrecy::ExposeSecret;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use broker::redis::{RedisBroker, Swept, Taken};
pub use broker::{Broker, BrokerError};
pub use message::{Refused, TaskMessage};
pub use result::{Outcome, ResultBackend, ResultError};
pub use route::Routes;
pub use settings::{check_settings, result_backend};

use crate::config::{CelerySettings, Settings};
use crate::jobs::schedule::{Schedule, schedules};
use crate::queue::JobQueue;
pub use crate::queue::celery::{DEDUP_PREFIX, dedup_key, task_id_of};
use crate::retry::Backoff;
use crate::store::Store;
use crate::telemetry::metrics::{CELERY_BROKER_CONNECTED, CELERY_BROKER_LOOPS};

/// What the loops share.
struct Shared {
    broker: Broker,
    store: Store,
    queue: JobQueue,
    routes: Routes,
    results: Option<ResultBackend>,
    settings: CelerySettings,
    /// Herald's own scan schedules: a beat message for a scan claims the
    /// scan's period, so each period runs once whoever sends it.
    schedules: Vec<Schedule>,
}

/// A running ingress; [`Ingress::shutdown`] stops it.
pub struct Ingress {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The broker's kind, as the loops gauge names it.
    kind: &'static str,
}

impl Ingress {
    /// Starts `celery.concurrency` loops and the restore sweep when a broker
    /// is configured; `None` when none is.
    pub async fn start(
        settings: &Settings,
        store: Store,
        queue: JobQueue,
    ) -> anyhow::Result<Option<Ingress>> {
        let celery = &settings.celery;
        if !celery.enabled() {
            return Ok(None);
        }
        let broker = if broker::amqp::is_amqp(celery.broker_url.expose_secret()) {
            Broker::Amqp(broker::amqp::AmqpBroker::new(celery)?)
        } else {
            Broker::Redis(RedisBroker::connect(celery).await.map_err(|e| {
                anyhow::anyhow!("could not reach Celery's broker (celery.broker_url): {e}")
            })?)
        };
        let results = result_backend(celery, &store)?;
        let shared = Arc::new(Shared {
            broker,
            store,
            queue,
            routes: Routes::new(celery)?,
            results,
            settings: celery.clone(),
            schedules: schedules(&settings.worker).map_err(anyhow::Error::msg)?,
        });
        let stop = CancellationToken::new();
        let mut tasks = consume::start(&shared, &stop);
        let revoker = revoke::Revoker::new(
            shared.store.clone(),
            shared.results.clone(),
            celery.revoke_expires,
        );
        let node = Arc::new(control::Node::new(celery, revoker));
        let node_name = node.name.clone();
        tasks.push(tokio::spawn(control::events::heartbeat(
            node.clone(),
            shared.broker.clone(),
            celery.clone(),
            stop.clone(),
        )));
        tasks.push(match &shared.broker {
            Broker::Redis(_) => {
                tokio::spawn(control::redis::listen(node, celery.clone(), stop.clone()))
            }
            Broker::Amqp(broker) => {
                tokio::spawn(control::amqp::listen(node, broker.clone(), stop.clone()))
            }
        });
        let kind = shared.broker.kind();
        metrics::gauge!(CELERY_BROKER_LOOPS, "broker" => kind).set(celery.concurrency as f64);
        if kind == "amqp" {
            // Rendered from the start, so a broker never reached shows 0.
            metrics::gauge!(CELERY_BROKER_CONNECTED).increment(0.0);
        }
        tracing::info!(broker = shared.broker.kind(), queues = ?celery.queues, loops = celery.concurrency, node = node_name, "Celery ingress started");
        Ok(Some(Ingress { stop, tasks, kind }))
    }

    /// Stops taking messages; a round under way finishes (its messages are
    /// recorded and acknowledged, or put back) within `timeout`. Past it,
    /// what the loops still hold goes back by the next restore sweep.
    pub async fn shutdown(self, timeout: Duration) {
        self.stop.cancel();
        metrics::gauge!(CELERY_BROKER_LOOPS, "broker" => self.kind).set(0.0);
        let mut tasks = self.tasks;
        let ended = tokio::time::timeout(timeout, async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
        })
        .await;
        if ended.is_err() {
            for task in &tasks {
                task.abort();
            }
            tracing::warn!(
                "Celery ingress stopped past its deadline; held messages go back by restore"
            );
        } else {
            tracing::info!("Celery ingress stopped");
        }
    }
}

/// Sleeps `period`, or less when `stop` comes; false then.
async fn pause(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        () = stop.cancelled() => false,
    }
}

/// The wait after a failed take or record: 200 ms doubling up to 5 s,
/// from the start again after a success.
fn broker_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// The timeouts of herald's connections to Celery's Redis (the broker and
/// the result backend): 10 s for an answer, 5 s to connect.
fn redis_timeouts() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)))
}
