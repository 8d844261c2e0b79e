//! Connecting to the configured apalis storage and pushing entries.
//!
//! SQLite: a file of its own in data_dir (`queue.sqlite3`), in WAL mode with
//! `synchronous=FULL` (apalis's own `setup` would turn syncing off, so its
//! migrations are run here instead). PostgreSQL: the database of
//! `database.url`, apalis's tables in the `apalis` schema, its migration
//! history kept there too, apart from herald's. Redis: `queue.redis_url`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::Queued;
use crate::config::{QueueBackend, QueueSettings, Settings};

/// Why the queue could not be reached or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("queue migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("queue Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue push failed: {0}")]
    Push(String),
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
    Redis(ConnectionManager),
}

/// Knobs every apalis storage config has; one macro sets them on each.
macro_rules! storage_config {
    ($config:ty, $settings:expr, $kind:expr) => {
        <$config>::default()
            .queue($settings.queue_name($kind))
            .heartbeat_interval($settings.heartbeat_interval)
            .missed_heartbeats(2)
            .batch_size(BATCH)
    };
}
pub(crate) use storage_config;

/// Entries a worker takes per fetch: small, so that on shutdown little was
/// fetched and not started.
pub(crate) const BATCH: usize = 4;

impl JobQueue {
    /// Connects to the configured backend and creates its tables.
    pub async fn connect(settings: &Settings) -> Result<Self, QueueError> {
        Ok(JobQueue {
            storage: Storage::connect(settings).await?,
            settings: settings.queue.clone(),
        })
    }

    /// Which storage this is, for logs.
    pub fn name(&self) -> &'static str {
        match self.storage {
            Storage::Sqlite(_) => "sqlite",
            Storage::Postgres(_) => "postgres",
            Storage::Redis(_) => "redis",
        }
    }

    /// Queues `item` to run at `run_at` (whole seconds; sooner means now).
    pub async fn push(&self, item: Queued, run_at: DateTime<Utc>) -> Result<(), QueueError> {
        let kind = item.job.kind();
        let task = TaskBuilder::new(item)
            .run_at_time(SystemTime::from(run_at))
            .build();
        let settings = &self.settings;
        let pushed = match &self.storage {
            Storage::Sqlite(pool) => {
                let config = storage_config!(apalis_sqlite::Config, settings, kind);
                let mut storage = SqliteStorage::<Queued>::new(pool).with_config(config);
                storage.push_task(task).await.map_err(|e| e.to_string())
            }
            Storage::Postgres(pool) => {
                let config = storage_config!(apalis_postgres::Config, settings, kind);
                let mut storage = PostgresStorage::<Queued>::new(pool).with_config(config);
                storage.push_task(task).await.map_err(|e| e.to_string())
            }
            Storage::Redis(conn) => {
                let config = storage_config!(apalis_redis::Config, settings, kind);
                let mut storage = RedisStorage::<Queued>::new(conn.clone()).with_config(config);
                storage.push_task(task).await.map_err(|e| e.to_string())
            }
        };
        pushed.map_err(QueueError::Push)
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

impl Storage {
    async fn connect(settings: &Settings) -> Result<Self, QueueError> {
        let database = settings.database_url()?;
        match settings.queue.backend {
            QueueBackend::Redis => {
                let url = settings.queue_redis_url().unwrap_or_default();
                Ok(Storage::Redis(apalis_redis::connect(url).await?))
            }
            QueueBackend::Database if database.starts_with("sqlite:") => {
                std::fs::create_dir_all(&settings.data_dir)?;
                let path = settings.data_dir.join("queue.sqlite3");
                let options = SqliteConnectOptions::from_str("sqlite:")?
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                SqliteStorage::migrations().run(&pool).await?;
                Ok(Storage::Sqlite(pool))
            }
            QueueBackend::Database => {
                let pool = PgPool::connect(&database).await?;
                sqlx::query("CREATE SCHEMA IF NOT EXISTS apalis")
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let options =
                    PgConnectOptions::from_str(&database)?.options([("search_path", "apalis")]);
                let pool = PgPoolOptions::new()
                    .max_connections(settings.database.max_connections)
                    .acquire_timeout(settings.database.acquire_timeout)
                    .connect_with(options)
                    .await?;
                PostgresStorage::migrations().run(&pool).await?;
                Ok(Storage::Postgres(pool))
            }
        }
    }
}
