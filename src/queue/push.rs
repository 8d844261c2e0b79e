//! Pushing entries into the queues: grouped by kind, in chunks of
//! [`PUSH_CHUNK`] (one multi-row insert, or one Redis script), each through
//! the kind's apalis storage.

use std::collections::BTreeMap;
use std::time::SystemTime;

use apalis::prelude::{Task, TaskBuilder, TaskSink};
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use chrono::{DateTime, Utc};

use super::{JobQueue, QueueError, Queued, Storage, storage_config};

/// Entries one queue write carries at most.
pub(crate) const PUSH_CHUNK: usize = 1000;

/// How many times apalis tries an entry whose handler failed (the ledger or
/// the queue could not be written) before giving up on it. The SQL queues
/// try a failed entry again at their next poll, so their default of 25 is
/// spent within a second or two of lock contention; this many lasts
/// minutes, as apalis-redis's own 25 (hard-coded, with backoff) do.
/// [`JobQueue::given_up`] covers what outlasts it.
const APALIS_TRIES: usize = 10_000;

impl JobQueue {
    /// Queues `item` to run at `run_at` (whole seconds; sooner means now).
    pub async fn push(&self, item: Queued, run_at: DateTime<Utc>) -> Result<(), QueueError> {
        self.push_many(vec![(item, run_at)]).await
    }

    /// Queues each item to run at its time: one write per kind and
    /// [`PUSH_CHUNK`] entries (one multi-row insert, or one Redis script).
    pub async fn push_many(&self, items: Vec<(Queued, DateTime<Utc>)>) -> Result<(), QueueError> {
        let mut by_kind: BTreeMap<&'static str, Vec<_>> = BTreeMap::new();
        for (item, run_at) in items {
            let kind = item.job.kind();
            // Only a job for later gets a run time: apalis-redis puts timed
            // entries in a scheduled set, and its fetch script fails for good
            // once about 8,000 of them are due together (Lua's unpack limit).
            let mut task = TaskBuilder::new(item).max_attempts(APALIS_TRIES);
            if run_at > Utc::now() {
                task = task.run_at_time(SystemTime::from(run_at));
            }
            by_kind.entry(kind).or_default().push(task.build());
        }
        for (kind, tasks) in by_kind {
            let mut tasks = tasks.into_iter().peekable();
            while tasks.peek().is_some() {
                let chunk: Vec<_> = tasks.by_ref().take(PUSH_CHUNK).collect();
                self.push_chunk(kind, chunk).await?;
            }
        }
        Ok(())
    }

    async fn push_chunk(&self, kind: &str, tasks: Vec<Task<Queued>>) -> Result<(), QueueError> {
        let settings = &self.settings;
        let tasks = futures_util::stream::iter(tasks);
        let pushed = match &self.storage {
            Storage::Sqlite(pool) => {
                let config = storage_config!(apalis_sqlite::Config, settings, kind);
                let mut storage = SqliteStorage::<Queued>::new(pool).with_config(config);
                storage.push_all(tasks).await.map_err(|e| e.to_string())
            }
            Storage::Postgres(pool) => {
                let config = storage_config!(apalis_postgres::Config, settings, kind);
                let mut storage = PostgresStorage::<Queued>::new(pool).with_config(config);
                storage.push_all(tasks).await.map_err(|e| e.to_string())
            }
            Storage::Redis(conn) => {
                let config = storage_config!(apalis_redis::Config, settings, kind);
                let mut storage = RedisStorage::<Queued>::new(conn.clone()).with_config(config);
                storage.push_all(tasks).await.map_err(|e| e.to_string())
            }
        };
        pushed.map_err(QueueError::Push)
    }
}
