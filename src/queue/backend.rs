//! Connecting to the configured apalis storage, pushing entries and pruning
//! finished ones.
//!
//! SQLite: a file of its own in data_dir (`queue.sqlite3`), in WAL mode with
//! `synchronous=FULL` (apalis's own `setup` would turn syncing off, so its
//! migrations are run here instead). PostgreSQL: the database of
//! `database.url`, apalis's tables in the `apalis` schema, its migration
//! history kept there too, apart from herald's. Redis: `queue.redis_url`.

use std::collections::BTreeMap;
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
use crate::jobs::KINDS;

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

impl JobQueue {
    /// The queue settings it was opened with (names, batches, retry policy).
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }
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

    async fn push_chunk(
        &self,
        kind: &str,
        tasks: Vec<apalis::prelude::Task<Queued>>,
    ) -> Result<(), QueueError> {
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

    /// Deletes the entries of herald's queues that finished (done) more
    /// than `age` ago; how many. apalis keeps them otherwise, so queue
    /// tables and Redis hashes would grow without end.
    pub async fn prune_finished(&self, age: Duration) -> Result<u64, QueueError> {
        let names: Vec<String> = KINDS.iter().map(|k| self.settings.queue_name(k)).collect();
        let cutoff = ended_before(age);
        match &self.storage {
            Storage::Sqlite(pool) => {
                let mut sql = sqlx::QueryBuilder::new(
                    "DELETE FROM Jobs WHERE status = 'Done' AND done_at IS NOT NULL AND done_at < ",
                );
                sql.push_bind(cutoff.timestamp());
                sql.push(" AND job_type");
                crate::store::push_id_list(&mut sql, &names);
                Ok(sql
                    .build()
                    .persistent(false)
                    .execute(pool)
                    .await?
                    .rows_affected())
            }
            Storage::Postgres(pool) => {
                const SQL: &str = "DELETE FROM apalis.jobs WHERE status = 'Done' \
                     AND done_at < $1 AND job_type = ANY($2)";
                let done = sqlx::query(SQL)
                    .bind(cutoff)
                    .bind(&names)
                    .execute(pool)
                    .await?;
                Ok(done.rows_affected())
            }
            Storage::Redis(conn) => {
                let mut conn = conn.clone();
                let mut pruned = 0;
                for kind in KINDS {
                    let config = storage_config!(apalis_redis::Config, self.settings, kind);
                    pruned += prune_done_redis(&mut conn, &config, cutoff.timestamp()).await?;
                }
                Ok(pruned)
            }
        }
    }

    /// The entries apalis gave up on, up to `limit` per kind. apalis retries
    /// an entry whose handler failed, and a herald handler fails only when
    /// the ledger or the queue cannot be written; after 25 tries apalis
    /// stops: apalis-redis moves the entry to its queue's dead set (its
    /// backoff spreads the tries over about five minutes), the SQL queues
    /// leave it `Failed` with its attempts used up (tried again at once,
    /// within seconds). Such an entry's job has not ended. An entry whose
    /// data is gone or unreadable is deleted here.
    pub async fn given_up(&self, limit: usize) -> Result<Vec<GivenUp>, QueueError> {
        let names: Vec<String> = KINDS.iter().map(|k| self.settings.queue_name(k)).collect();
        let kind_of = |name: &str| {
            KINDS
                .iter()
                .copied()
                .find(|k| self.settings.queue_name(k) == name)
        };
        let rows: Vec<(String, String, Vec<u8>)> = match &self.storage {
            Storage::Sqlite(pool) => {
                let mut sql = sqlx::QueryBuilder::new(
                    "SELECT id, job_type, job FROM Jobs WHERE status = 'Failed' \
                     AND attempts >= max_attempts AND job_type",
                );
                crate::store::push_id_list(&mut sql, &names);
                sql.push(" LIMIT ").push_bind(limit as i64);
                sql.build_query_as()
                    .persistent(false)
                    .fetch_all(pool)
                    .await?
            }
            Storage::Postgres(pool) => {
                const SQL: &str = "SELECT id, job_type, job FROM apalis.jobs \
                     WHERE status = 'Failed' AND attempts >= max_attempts \
                     AND job_type = ANY($1) LIMIT $2";
                sqlx::query_as(SQL)
                    .bind(&names)
                    .bind(limit as i64)
                    .fetch_all(pool)
                    .await?
            }
            Storage::Redis(conn) => redis_given_up(&mut conn.clone(), self, limit).await?,
        };
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        for (entry, name, data) in rows {
            let Some(kind) = kind_of(&name) else { continue };
            match serde_json::from_slice::<Queued>(&data) {
                Ok(item) => found.push(GivenUp { kind, entry, item }),
                Err(_) => unreadable.push((kind, entry)),
            }
        }
        if !unreadable.is_empty() {
            tracing::warn!(entries = ?unreadable, "deleting given-up queue entries whose data is gone or unreadable");
            self.forget_given_up(&unreadable).await?;
        }
        Ok(found)
    }

    /// Runs given-up entries (kind, entry id) again: on the SQL queues the
    /// entry itself goes back to `Pending` with fresh attempts; on Redis a
    /// copy is queued and the dead one deleted (queued first: a crash in
    /// between leaves a duplicate, which the ledger skips, never a loss).
    pub async fn requeue_given_up(&self, entries: &[GivenUp]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = entries.iter().map(|e| e.entry.clone()).collect();
        const REQUEUE_SQL: &str = "UPDATE Jobs SET status = 'Pending', attempts = 0, \
             lock_by = NULL, lock_at = NULL, done_at = NULL WHERE status = 'Failed' AND id";
        if self.sql_for_ids(REQUEUE_SQL, &ids).await?.is_some() {
            return Ok(());
        }
        let now = Utc::now();
        self.push_many(entries.iter().map(|e| (e.item.clone(), now)).collect())
            .await?;
        let dead: Vec<(&'static str, String)> =
            entries.iter().map(|e| (e.kind, e.entry.clone())).collect();
        self.forget_given_up(&dead).await
    }

    /// Deletes given-up entries (kind, entry id); on Redis with their data,
    /// result, metadata and dead-set membership.
    pub async fn forget_given_up(
        &self,
        entries: &[(&'static str, String)],
    ) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = entries.iter().map(|(_, id)| id.clone()).collect();
        const FORGET_SQL: &str = "DELETE FROM Jobs WHERE status = 'Failed' AND id";
        let Storage::Redis(conn) = &self.storage else {
            self.sql_for_ids(FORGET_SQL, &ids).await?;
            return Ok(());
        };
        let mut conn = conn.clone();
        let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (kind, id) in entries {
            by_kind.entry(kind).or_default().push(id.clone());
        }
        for (kind, ids) in by_kind {
            let config = storage_config!(apalis_redis::Config, self.settings, kind);
            forget_redis(&mut conn, &config, &ids).await?;
        }
        Ok(())
    }

    /// Runs `head` and a list test over `ids` on an SQL queue, answering how
    /// many rows it changed; `None` on Redis. `Jobs` names apalis's table on
    /// both: SQLite ignores the case, and the PostgreSQL pool's search path
    /// is the `apalis` schema.
    async fn sql_for_ids(
        &self,
        head: &'static str,
        ids: &[String],
    ) -> Result<Option<u64>, QueueError> {
        let changed = match &self.storage {
            Storage::Sqlite(pool) => {
                let mut sql = sqlx::QueryBuilder::new(head);
                crate::store::push_id_list(&mut sql, ids);
                let done = sql.build().persistent(false).execute(pool).await?;
                done.rows_affected()
            }
            Storage::Postgres(pool) => {
                let mut sql = sqlx::QueryBuilder::new(head);
                crate::store::push_id_list(&mut sql, ids);
                let done = sql.build().persistent(false).execute(pool).await?;
                done.rows_affected()
            }
            Storage::Redis(_) => return Ok(None),
        };
        Ok(Some(changed))
    }

    /// Puts back in their queues the entries that the apalis workers
    /// `workers` (kind, worker name) fetched and still hold, so that live
    /// workers take them now instead of after these workers' heartbeats
    /// expire. For a shutdown whose deadline passed; how many went back.
    /// A job that was running here may then run twice (jobs are idempotent).
    pub async fn put_back(&self, workers: &[(&str, String)]) -> Result<u64, QueueError> {
        let names: Vec<String> = workers.iter().map(|(_, name)| name.clone()).collect();
        const PUT_BACK_SQL: &str = "UPDATE Jobs SET status = 'Pending', lock_by = NULL, \
             lock_at = NULL WHERE status IN ('Queued', 'Running') AND lock_by";
        if let Some(moved) = self.sql_for_ids(PUT_BACK_SQL, &names).await? {
            return Ok(moved);
        }
        let Storage::Redis(conn) = &self.storage else {
            unreachable!("the SQL queues answered above")
        };
        let mut conn = conn.clone();
        let mut moved = 0;
        for (kind, name) in workers {
            let config = storage_config!(apalis_redis::Config, self.settings, kind);
            moved += PUT_BACK
                .key(format!("{}:{name}", config.inflight_jobs_set()))
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .invoke_async::<u64>(&mut conn)
                .await?;
        }
        Ok(moved)
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
                // Longer than the default response timeout: a fetch or an
                // ack over a deep queue may take a while under load.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(10)))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                let client = redis::Client::open(url)?;
                let conn = client.get_connection_manager_with_config(config).await?;
                Ok(Storage::Redis(conn))
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
                // Two processes starting at once would both create the schema
                // (IF NOT EXISTS is not atomic): one waits for the other.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herald.apalis_schema'))")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("CREATE SCHEMA IF NOT EXISTS apalis")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
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

/// The time `age` ago (the epoch when that is further back than time goes).
pub(crate) fn ended_before(age: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Deletes the done entries of one apalis-redis queue that finished at or
/// before `cutoff` (Unix seconds): the done set is walked with SSCAN and
/// each chunk of ids pruned by one script, so Redis is never held for a
/// whole queue (apalis-redis's own `vacuum_before` reads the queue's whole
/// data hash at once, never trims the done set, and also deletes entries
/// whose status is `Failed`, which are still waiting for their retry).
async fn prune_done_redis(
    conn: &mut ConnectionManager,
    config: &apalis_redis::Config,
    cutoff: i64,
) -> Result<u64, QueueError> {
    let done = config.done_jobs_set();
    let mut cursor = 0u64;
    let mut pruned = 0;
    loop {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(&done)
            .arg(cursor)
            .arg("COUNT")
            .arg(PROMOTE_CHUNK)
            .query_async(conn)
            .await?;
        if !ids.is_empty() {
            pruned += PRUNE_DONE
                .key(&done)
                .key(config.job_data_hash())
                .key(config.job_meta_hash())
                .arg(cutoff)
                .arg(ids)
                .invoke_async::<u64>(conn)
                .await?;
        }
        if next == 0 {
            return Ok(pruned);
        }
        cursor = next;
    }
}

/// How many times apalis tries an entry whose handler failed (the ledger or
/// the queue could not be written) before giving up on it. The SQL queues
/// try a failed entry again at their next poll, so their default of 25 is
/// spent within a second or two of lock contention; this many lasts
/// minutes, as apalis-redis's own 25 (hard-coded, with backoff) do.
/// [`JobQueue::given_up`] covers what outlasts it.
const APALIS_TRIES: usize = 10_000;

/// A queue entry apalis gave up on, and the job it carries.
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub kind: &'static str,
    /// apalis's id of the entry (not the job's).
    pub entry: String,
    pub item: Queued,
}

/// [`JobQueue::given_up`] on Redis: up to `limit` ids of each queue's dead
/// set, with their queue name and data (empty when it is gone).
async fn redis_given_up(
    conn: &mut ConnectionManager,
    queue: &JobQueue,
    limit: usize,
) -> Result<Vec<(String, String, Vec<u8>)>, QueueError> {
    let mut rows = Vec::new();
    for kind in KINDS {
        let config = storage_config!(apalis_redis::Config, queue.settings, kind);
        let ids: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(config.dead_jobs_set())
            .arg(limit)
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            continue;
        }
        let data: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(config.job_data_hash())
            .arg(&ids)
            .query_async(conn)
            .await?;
        let name = queue.settings.queue_name(kind);
        for (id, data) in ids.into_iter().zip(data) {
            rows.push((id, name.clone(), data.unwrap_or_default()));
        }
    }
    Ok(rows)
}

/// Deletes apalis-redis entries `ids` of one queue from its dead set, with
/// their data, result and metadata.
async fn forget_redis(
    conn: &mut ConnectionManager,
    config: &apalis_redis::Config,
    ids: &[String],
) -> Result<(), QueueError> {
    let mut pipe = redis::pipe();
    pipe.srem(config.dead_jobs_set(), ids)
        .hdel(config.job_data_hash(), ids)
        .hdel(format!("{}:result", config.job_meta_hash()), ids);
    for id in ids {
        pipe.del(format!("{}:{id}", config.job_meta_hash()));
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// One chunk of [`prune_done_redis`]: for each id whose entry is `Done`
/// since at or before the cutoff, delete its data, result and metadata and
/// leave the done set; an id without metadata only leaves the set. KEYS
/// done set, data hash, metadata prefix; ARGV cutoff, ids. Returns how
/// many entries were deleted.
static PRUNE_DONE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"local cutoff = tonumber(ARGV[1])
local pruned = 0
for i = 2, #ARGV do
    local id = ARGV[i]
    local meta = KEYS[3] .. ":" .. id
    local status = redis.call("hget", meta, "status")
    local done_at = tonumber(redis.call("hget", meta, "done_at"))
    if status == "Done" and done_at and done_at <= cutoff then
        redis.call("hdel", KEYS[2], id)
        redis.call("hdel", KEYS[3] .. ":result", id)
        redis.call("del", meta)
        redis.call("srem", KEYS[1], id)
        pruned = pruned + 1
    elseif not status then
        redis.call("srem", KEYS[1], id)
    end
end
return pruned"#,
    )
});

/// apalis-redis's own re-enqueue of a dead worker's entries, for a worker
/// that is stopping: its in-flight set goes back to the head of the active
/// list (in chunks, under Lua's unpack limit) and fetchers are signalled.
/// KEYS in-flight set, active list, signal list. Returns how many moved.
static PUT_BACK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"local held = redis.call("smembers", KEYS[1])
for i = 1, #held, 1000 do
    redis.call("lpush", KEYS[2], unpack(held, i, math.min(i + 999, #held)))
end
redis.call("del", KEYS[1])
if #held > 0 then
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return #held"#,
    )
});

/// Entries one queue write carries at most.
pub(crate) const PUSH_CHUNK: usize = 1000;

/// Entries [`promote_due`] moves per round trip.
const PROMOTE_CHUNK: usize = 1000;

/// apalis-redis queues every entry through its scheduled set, and its fetch
/// script moves all due entries at once with one Lua `unpack`, which fails
/// (for good, on every fetch) past about 8,000. This moves due entries to the
/// queue's active list in chunks first, as that fetch would; run it on every
/// poll. Returns how many it moved.
pub(crate) async fn promote_due(
    conn: &mut ConnectionManager,
    config: &apalis_redis::Config,
) -> Result<usize, redis::RedisError> {
    static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r#"local due = redis.call("zrangebyscore", KEYS[1], 0, ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
if #due > 0 then
    redis.call("rpush", KEYS[2], unpack(due))
    redis.call("zrem", KEYS[1], unpack(due))
end
return #due"#,
        )
    });
    let now = Utc::now().timestamp();
    let mut moved = 0;
    loop {
        let count: usize = SCRIPT
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .arg(now)
            .arg(PROMOTE_CHUNK)
            .invoke_async(conn)
            .await?;
        moved += count;
        if count < PROMOTE_CHUNK {
            return Ok(moved);
        }
    }
}
