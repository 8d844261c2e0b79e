//! Upkeep of the queues, beside what apalis does itself: pruning finished
//! entries, finding and reviving (or forgetting) the entries apalis gave up
//! on, and putting back what a stopping worker still holds. The statements
//! and scripts these run on apalis's tables and keys are in `apalis_layout`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::apalis_layout::{redis as layout, sql};
use super::redis::PROMOTE_CHUNK;
use super::{JobQueue, QueueError, Queued, Storage, storage_config};
use crate::jobs::KINDS;

/// A queue entry apalis gave up on, and the job it carries.
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub kind: &'static str,
    /// apalis's id of the entry (not the job's).
    pub entry: String,
    pub item: Queued,
}

impl JobQueue {
    /// Deletes the entries of herald's queues that finished (done) more
    /// than `age` ago; how many. apalis keeps them otherwise, so queue
    /// tables and Redis hashes would grow without end.
    pub async fn prune_finished(&self, age: Duration) -> Result<u64, QueueError> {
        let names: Vec<String> = KINDS.iter().map(|k| self.settings.queue_name(k)).collect();
        let cutoff = ended_before(age);
        match &self.storage {
            Storage::Sqlite(pool) => {
                let mut sql = sqlx::QueryBuilder::new(sql::SQLITE_PRUNE_DONE);
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
                let done = sqlx::query(sql::POSTGRES_PRUNE_DONE)
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
                let mut sql = sqlx::QueryBuilder::new(sql::SQLITE_GIVEN_UP);
                crate::store::push_id_list(&mut sql, &names);
                sql.push(" LIMIT ").push_bind(limit as i64);
                sql.build_query_as()
                    .persistent(false)
                    .fetch_all(pool)
                    .await?
            }
            Storage::Postgres(pool) => {
                sqlx::query_as(sql::POSTGRES_GIVEN_UP)
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
        if self
            .sql_for_ids(sql::REQUEUE_GIVEN_UP, &ids)
            .await?
            .is_some()
        {
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
        let Storage::Redis(conn) = &self.storage else {
            self.sql_for_ids(sql::FORGET_GIVEN_UP, &ids).await?;
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
    /// many rows it changed; `None` on Redis (see [`sql`] for the table name).
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
        if let Some(moved) = self.sql_for_ids(sql::PUT_BACK, &names).await? {
            return Ok(moved);
        }
        let Storage::Redis(conn) = &self.storage else {
            unreachable!("the SQL queues answered above")
        };
        let mut conn = conn.clone();
        let mut moved = 0;
        for (kind, name) in workers {
            let config = storage_config!(apalis_redis::Config, self.settings, kind);
            moved += layout::PUT_BACK
                .key(layout::inflight_set(&config, name))
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .invoke_async::<u64>(&mut conn)
                .await?;
        }
        Ok(moved)
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
            pruned += layout::PRUNE_DONE
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
        .hdel(layout::result_hash(config), ids);
    for id in ids {
        pipe.del(layout::meta_key(config, id));
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}
