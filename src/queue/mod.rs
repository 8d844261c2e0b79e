//! The queues jobs wait in: apalis storages on SQLite, PostgreSQL or Redis,
//! one queue per kind, named `<queue.prefix>.<kind>` (never after a Rust type).
//! Here the [`JobQueue`] handle; connecting in `sqlite`, `postgres`, `redis`,
//! writing in `push`, upkeep in `maintenance`, apalis's tables in [`apalis_layout`].

pub mod apalis_layout;
pub mod celery;
pub(crate) mod maintenance;
mod postgres;
mod push;
pub(crate) mod redis;
mod sqlite;
pub mod submit;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

pub use maintenance::GivenUp;
pub use submit::{
    BatchError, MAX_BATCH, Submission, SubmitError, Submitted, Submitter, backoff, check_all,
    requeue_unqueued, retry_dead, submit, submit_many,
};

use crate::config::{QueueBackend, QueueSettings, Settings};
use crate::jobs::Job;

/// What a queue carries: which ledger row, and the job itself. State,
/// attempts and errors live in the ledger (`herald_jobs`, see
/// [`crate::store`]), so submission ([`submit()`]), the retry policy and dead
/// jobs behave alike on every backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub id: String,
    #[serde(flatten)]
    pub job: Job,
    /// The Celery task id when the job came from Celery's broker (its
    /// dedup key is `celery:<id>`): the worker writes the job's end to
    /// Celery's result backend under it. Absent for herald's own jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub celery_id: Option<String>,
}

impl Queued {
    /// The entry for ledger job `id`, Celery's when `dedup_key` says so.
    pub fn new(id: String, job: Job, dedup_key: Option<&str>) -> Queued {
        let celery_id = dedup_key.and_then(celery::task_id_of).map(str::to_string);
        Queued { id, job, celery_id }
    }
}

/// Why the queue could not be reached or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("queue migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("queue Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("queue push failed: {0}")]
    Push(String),
    #[error("queue pruning failed: {0}")]
    Prune(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("queue file: {0}")]
    Io(#[from] std::io::Error),
}

/// A connection to the queue storage and the queue settings; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    pub(crate) storage: Storage,
    pub(crate) settings: QueueSettings,
}

/// The connection, per backend.
#[derive(Clone)]
pub(crate) enum Storage {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Redis(::redis::aio::ConnectionManager),
}

/// Knobs every apalis storage config has; one macro sets them on each.
macro_rules! storage_config {
    ($config:ty, $settings:expr, $kind:expr) => {
        <$config>::default()
            .queue($settings.queue_name($kind))
            .heartbeat_interval($settings.heartbeat_interval)
            .missed_heartbeats(2)
            // A fetch takes as many entries as the kind runs at once.
            .batch_size($settings.concurrency_of($kind))
            // A fetch already marks its entries as this worker's, and a dead
            // worker's entries go back by its heartbeat alone. apalis's extra
            // per-task lock is one more write each (on Redis, a scan of the
            // whole waiting list per entry), so it is left off.
            .lock_tasks(false)
    };
}
pub(crate) use storage_config;

impl JobQueue {
    /// Connects to the configured backend and creates its tables.
    pub async fn connect(settings: &Settings) -> Result<Self, QueueError> {
        let database = settings.database_url()?;
        let storage = match settings.queue.backend {
            QueueBackend::Redis => Storage::Redis(redis::connect(settings).await?),
            QueueBackend::Database if database.starts_with("sqlite:") => {
                Storage::Sqlite(sqlite::connect(settings).await?)
            }
            QueueBackend::Database => {
                Storage::Postgres(postgres::connect(settings, &database).await?)
            }
        };
        Ok(JobQueue {
            storage,
            settings: settings.queue.clone(),
        })
    }

    /// The queue settings it was opened with (names, batches, retry policy).
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Which storage this is, for logs.
    pub fn name(&self) -> &'static str {
        match self.storage {
            Storage::Sqlite(_) => "sqlite",
            Storage::Postgres(_) => "postgres",
            Storage::Redis(_) => "redis",
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match &self.storage {
            Storage::Sqlite(pool) => pool.close().await,
            Storage::Postgres(pool) => pool.close().await,
            Storage::Redis(_) => {}
        }
    }
}
