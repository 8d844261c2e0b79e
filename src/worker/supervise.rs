//! Starting and stopping the worker's parts: one apalis worker per kind
//! (restarted with a fresh name and a backoff when its backend fails, as
//! when PostgreSQL restarts or Redis goes away), the scan scheduler, the
//! outbox publisher and the queue-depth gauge.
//!
//! Shutdown: stop fetching, let running jobs finish within
//! `queue.shutdown_timeout`. Past that deadline, the entries this process
//! still holds (fetched and not finished) are put back in their queues at
//! once; should that fail, apalis hands them to a live worker once this one
//! misses its heartbeats (twice `queue.heartbeat_interval`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::{BackendExt, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;
use tokio_util::sync::CancellationToken;

use super::pause::Paused;
use super::upkeep::{depth_gauge, promote_loop, prune_done, requeue_loop};
use super::{AttemptError, Attempted, Runner, attempt, attempt_many};
use crate::batch::Batcher;
use crate::config::Settings;
use crate::jobs::{JobContext, KINDS};
use crate::layer::ChannelLayer;
use crate::publish::outbox::Publisher;
use crate::queue::redis::promote_due;
use crate::queue::{JobQueue, QueueError, Queued, Storage, storage_config};
use crate::retry::Backoff;
use crate::store::Store;
use crate::telemetry::metrics as m;

/// Jobs running now in this process, for a shutdown that waits for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts one running job until dropped (also in `herald_jobs_running`).
struct Running<'a>(&'a InFlight, metrics::Gauge);

impl<'a> Running<'a> {
    fn new(in_flight: &'a InFlight, kind: &'static str) -> Self {
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        let gauge = metrics::gauge!(m::JOBS_RUNNING, "kind" => kind);
        gauge.increment(1.0);
        Running(in_flight, gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.1.decrement(1.0);
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What the apalis handler gets: the runner, the batcher of event jobs and
/// the in-flight count; also the name of each kind's current apalis worker.
struct Shared {
    runner: Runner,
    events: Batcher<Queued, Result<Attempted, AttemptError>>,
    in_flight: InFlight,
    workers: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// The kinds an operator paused (see [`Paused`]).
    paused: Paused,
}

/// A started worker; [`Worker::shutdown`] stops it.
pub struct Worker {
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    scheduler: Option<JobScheduler>,
    name: String,
}

impl Worker {
    /// Starts every part on `store`, `layer` and `queue`.
    pub async fn start(
        settings: &Settings,
        store: Store,
        layer: Arc<dyn ChannelLayer>,
        queue: JobQueue,
    ) -> anyhow::Result<Worker> {
        let publisher = Publisher::new(store.clone(), layer);
        let ctx = JobContext {
            store: store.clone(),
            publisher: publisher.clone(),
            reminder_offsets: settings.worker.reminder_offsets.clone(),
            closed_statuses: settings.worker.closed_statuses.clone(),
            notification_types: settings.worker.notification_types.clone(),
            job_id: String::new(),
        };
        let runner = Runner {
            ctx: ctx.clone(),
            queue,
            results: crate::ingress::result_backend(&settings.celery, &store)?,
            track_started: settings
                .celery
                .track_started
                .then(|| crate::ingress::control::node_name(&settings.celery)),
        };
        let batch_runner = Arc::new(runner.clone());
        let size = settings.queue.batch_size;
        // SQLite has one writer at a time: parallel batches would only queue
        // on its lock and, under load, fail past its busy timeout.
        let batches = match store {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => settings.queue.batches,
        };
        let events = Batcher::spawn(size, batches, move |items| {
            let runner = batch_runner.clone();
            async move { attempt_many(&runner, items).await }
        });
        // Read before any kind worker starts: a paused kind fetches nothing.
        let paused = Paused::load(&store).await;
        let shared = Arc::new(Shared {
            runner,
            events,
            in_flight: InFlight::default(),
            workers: Default::default(),
            paused: paused.clone(),
        });
        let name = unique_name();
        let stop = CancellationToken::new();
        let mut tasks: Vec<JoinHandle<()>> = KINDS
            .iter()
            .map(|kind| tokio::spawn(supervise(shared.clone(), kind, name.clone(), stop.clone())))
            .collect();
        tasks.push(tokio::spawn(paused.poll(store.clone(), stop.clone())));
        let every = settings.worker.outbox_retry_every;
        tasks.push(tokio::spawn(publisher.run(every, stop.clone())));
        tasks.push(tokio::spawn(depth_gauge(store.clone(), stop.clone())));
        let keep = settings.queue.keep_done;
        let queue = shared.runner.queue.clone();
        tasks.push(tokio::spawn(requeue_loop(
            store.clone(),
            queue.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(prune_done(store, queue, keep, stop.clone())));
        let schedules =
            super::scheduler::schedules(&settings.worker).map_err(anyhow::Error::msg)?;
        let scheduler = super::scheduler::start(schedules, ctx, name.clone()).await?;
        tracing::info!(worker = %name, queue = shared.runner.queue.name(), "worker started");
        Ok(Worker {
            shared,
            stop,
            tasks,
            scheduler: Some(scheduler),
            name,
        })
    }

    /// This process's worker name (unique per process start).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops fetching and scheduling, then waits up to `timeout` for the
    /// running jobs; past it, puts back in the queue what this worker still
    /// holds, so other workers take it at once.
    pub async fn shutdown(mut self, timeout: Duration) -> Stopped {
        self.stop.cancel();
        if let Some(mut scheduler) = self.scheduler.take()
            && let Err(error) = scheduler.shutdown().await
        {
            tracing::warn!(%error, "scheduler did not stop cleanly");
        }
        let in_flight = &self.shared.in_flight;
        let mut tasks = std::mem::take(&mut self.tasks);
        let drained = tokio::time::timeout(timeout, async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
            loop {
                let idle = in_flight.idle.notified();
                if in_flight.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        let workers: Vec<(&str, String)> = crate::layer::lock(&self.shared.workers)
            .iter()
            .map(|(kind, name)| (*kind, name.clone()))
            .collect();
        if drained.is_ok() {
            return self.stopped_drained(&workers).await;
        }
        let running = in_flight.count.load(Ordering::SeqCst);
        // The apalis workers still poll while they wait for their jobs:
        // stop them first, or they fetch what is put back.
        stop_tasks(tasks).await;
        match put_back_twice(&self.shared.runner.queue, &workers).await {
            Ok(put_back) => {
                tracing::warn!(
                    running,
                    put_back,
                    "shutdown timeout: the entries still held are back in the queue"
                );
                Stopped::PutBack(put_back)
            }
            Err(error) => {
                tracing::warn!(
                    running,
                    %error,
                    "shutdown timeout: entries still held go back when this worker's \
                     heartbeat expires"
                );
                Stopped::HeldUntilHeartbeat
            }
        }
    }
}

impl Worker {
    /// Every running job ended in time. A fetch can still have taken
    /// entries that never started: apalis moves them to the worker's
    /// in-flight set, then stops before running them. Nothing of this
    /// worker acknowledges them any more, so they go back now rather than
    /// when the heartbeat expires.
    async fn stopped_drained(&self, workers: &[(&str, String)]) -> Stopped {
        match self.shared.runner.queue.put_back(workers).await {
            Ok(0) => {
                tracing::info!(worker = %self.name, "worker stopped");
                Stopped::Drained
            }
            Ok(put_back) => {
                tracing::info!(
                    worker = %self.name,
                    put_back,
                    "worker stopped; the entries it had fetched and not started are back in the queue"
                );
                Stopped::PutBack(put_back)
            }
            Err(error) => {
                tracing::warn!(
                    worker = %self.name,
                    %error,
                    "worker stopped; entries it fetched and never started go back when its \
                     heartbeat expires"
                );
                Stopped::HeldUntilHeartbeat
            }
        }
    }
}

/// Puts back what `workers` hold, and again a moment later: a fetch the
/// aborted workers had already sent to an SQL queue may still commit after
/// the first pass, and would otherwise wait for their heartbeat.
async fn put_back_twice(queue: &JobQueue, workers: &[(&str, String)]) -> Result<u64, QueueError> {
    let first = queue.put_back(workers).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(first + queue.put_back(workers).await?)
}

/// How [`Worker::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every running job finished within the timeout.
    Drained,
    /// This many entries the worker held went back: still running at the
    /// timeout, or fetched and never started.
    PutBack(u64),
    /// Entries were held (past the timeout, or fetched and never started)
    /// and the put-back failed: the entries go back when
    /// the worker's heartbeat expires.
    HeldUntilHeartbeat,
}

/// Aborts `tasks` and waits (briefly) until they have ended: a task ends
/// at its next await once aborted, dropping what it was driving.
async fn stop_tasks(tasks: Vec<JoinHandle<()>>) {
    for task in &tasks {
        task.abort();
    }
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        // A handle already awaited to its end must not be polled again.
        for task in tasks.into_iter().filter(|task| !task.is_finished()) {
            let _ = task.await;
        }
    });
    if ended.await.is_err() {
        tracing::warn!("a worker task did not stop within 1 s of being aborted");
    }
}

/// `herald-<host>-<pid>-<random>`: apalis needs a name no other live worker
/// (nor this process's previous run) holds.
fn unique_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() { "host" } else { host };
    let suffix = &ulid::Ulid::generate().to_string()[20..];
    format!("herald-{host}-{}-{suffix}", std::process::id())
}

/// Runs the apalis worker of `kind` until `stop`, starting it again (with
/// a new name) whenever its backend fails.
async fn supervise(shared: Arc<Shared>, kind: &'static str, base: String, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    for generation in 0u64.. {
        if shared.paused.is_paused(kind) {
            tracing::info!(kind, "job kind paused: its worker waits for resume");
            tokio::select! {
                () = shared.paused.until_resumed(kind) => {}
                () = stop.cancelled() => return,
            }
            tracing::info!(kind, "job kind resumed");
        }
        let name = format!("{base}-{kind}-{generation}");
        crate::layer::lock(&shared.workers).insert(kind, name.clone());
        let started = tokio::time::Instant::now();
        // This generation ends when the process stops or the kind is paused.
        let ends = stop.child_token();
        let pause_watch = {
            let (paused, ends) = (shared.paused.clone(), ends.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = paused.until_paused(kind) => ends.cancel(),
                    () = ends.cancelled() => {}
                }
            })
        };
        let result = run_kind(shared.clone(), kind, &name, ends.clone()).await;
        ends.cancel();
        let _ = pause_watch.await;
        if stop.is_cancelled() {
            return;
        }
        if shared.paused.is_paused(kind) {
            // What the stopped worker fetched and did not start goes back.
            let held = [(kind, name.clone())];
            match put_back_twice(&shared.runner.queue, &held).await {
                Ok(put_back) => tracing::info!(kind, put_back, "job kind paused: worker stopped"),
                Err(error) => tracing::warn!(kind, %error,
                    "job kind paused: what its worker held goes back when its heartbeat expires"),
            }
            backoff.reset();
            continue;
        }
        // A worker that ran a while failed afresh: start the backoff over.
        if result.is_ok() || started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if let Err(error) = result {
            tracing::warn!(worker = %name, %error, ?delay, "queue worker failed; restarting");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The apalis handler: one attempt under herald's policy; a scan alone,
/// an event in a batch with the other events waiting now.
async fn handle(item: Queued, shared: Data<Arc<Shared>>) -> Result<(), BoxDynError> {
    let kind = item.job.kind();
    if shared.paused.is_paused(kind) {
        // Fetched just before the pause reached this worker: queued again
        // unrun (the ledger still says queued); it waits for resume.
        shared.runner.queue.push(item, chrono::Utc::now()).await?;
        return Ok(());
    }
    let _running = Running::new(&shared.in_flight, kind);
    let answer = if item.job.is_scan() {
        attempt(&shared.runner, item).await
    } else {
        let answer = shared.events.call(item).await;
        answer.unwrap_or(Err(AttemptError::BatchLost))
    };
    match answer {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "job attempt could not be recorded; apalis keeps the entry");
            Err(error.into())
        }
    }
}

/// Builds and runs one apalis worker on `$storage` until `$stop`.
macro_rules! run_worker {
    ($storage:expr, $shared:expr, $kind:expr, $name:expr, $stop:expr) => {{
        let settings = $shared.runner.queue.settings();
        let poll = settings.poll_interval;
        let concurrency = settings.concurrency_of($kind);
        let stop = $stop;
        WorkerBuilder::new($name)
            .backend($storage.poll_with_interval(poll))
            .concurrency(concurrency)
            .data($shared.clone())
            .build(handle)
            .run_until(async move {
                stop.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }};
}

async fn run_kind(
    shared: Arc<Shared>,
    kind: &'static str,
    name: &str,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let settings = shared.runner.queue.settings();
    match &shared.runner.queue.storage {
        Storage::Sqlite(pool) => {
            let config = storage_config!(apalis_sqlite::Config, settings, kind);
            let storage = SqliteStorage::<Queued>::new(pool).with_config(config);
            run_worker!(storage, shared, kind, name, stop)
        }
        Storage::Postgres(pool) => {
            let config = storage_config!(apalis_postgres::Config, settings, kind);
            let storage = PostgresStorage::<Queued>::new(pool).with_config(config);
            run_worker!(storage, shared, kind, name, stop)
        }
        Storage::Redis(conn) => {
            let config = storage_config!(apalis_redis::Config, settings, kind);
            // Due entries first, so apalis's first fetch finds few.
            promote_due(&mut conn.clone(), &config).await?;
            let promoter = tokio::spawn(promote_loop(
                conn.clone(),
                config.clone(),
                settings.poll_interval,
                stop.clone(),
            ));
            let storage = RedisStorage::<Queued>::new(conn.clone()).with_config(config);
            let result = run_worker!(storage, shared, kind, name, stop);
            promoter.abort();
            result
        }
    }
}
