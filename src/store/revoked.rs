//! Revoked Celery tasks (`herald_celery_revoked`). Celery's worker keeps
//! its revoked set in memory, so a revoke reaches only the workers online
//! at that moment and is forgotten on restart; herald keeps it in the
//! database, so every herald process honours it, and every one started
//! later, until it expires. A revoke cancels the task's job when it is
//! still waiting (a countdown in the ledger); the ingress checks each
//! message it takes against the set, so a revoke that comes before its
//! message is honoured too. Also the countdowns waiting in the ledger, as
//! Celery's `inspect scheduled` lists them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{ID_CHUNK, Store, StoreError, now, push_id_list, with_pool};

/// What became of each task a revoke named.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Waiting jobs cancelled now: they never run.
    pub cancelled: Vec<String>,
    /// No job yet (the message has not come, or is not herald's): it will
    /// be refused when it comes.
    pub unseen: Vec<String>,
    /// Jobs running, or already ended, by their state: too late.
    pub past: Vec<(String, String)>,
}

impl Store {
    /// Records `task_ids` as revoked until `expires_at`, and cancels the
    /// jobs of those still waiting (queued or retrying).
    pub async fn revoke_tasks(
        &self,
        task_ids: &[String],
        expires_at: DateTime<Utc>,
        terminate: bool,
    ) -> Result<Revoked, StoreError> {
        let at = now();
        let mut revoked = Revoked::default();
        // Once each: PostgreSQL refuses an upsert that names a row twice.
        let mut seen = HashSet::new();
        let task_ids: Vec<String> = task_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect();
        for chunk in task_ids.chunks(ID_CHUNK / 4) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "INSERT INTO herald_celery_revoked (task_id, revoked_at, expires_at, terminate) ",
                );
                sql.push_values(chunk, |mut row, task_id| {
                    row.push_bind(task_id)
                        .push_bind(db_time(at))
                        .push_bind(db_time(expires_at))
                        .push_bind(terminate);
                });
                sql.push(
                    " ON CONFLICT (task_id) DO UPDATE SET expires_at = excluded.expires_at, \
                     terminate = excluded.terminate",
                );
                sql.build().persistent(false).execute(pool).await?;
            });
            // The ingress's dedup key of a Celery task (`queue::celery`).
            let keys: Vec<String> = chunk.iter().map(|id| format!("celery:{id}")).collect();
            let cancelled: Vec<String> = with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new("UPDATE herald_jobs SET state = 'cancelled', updated_at = ");
                sql.push_bind(db_time(at));
                sql.push(" WHERE state IN ('queued', 'retrying') AND dedup_key");
                push_id_list(&mut sql, &keys);
                sql.push(" RETURNING dedup_key");
                sql.build_query_scalar().persistent(false).fetch_all(pool).await?
            });
            let states: Vec<(String, String)> = with_pool!(self, pool => {
                let mut sql =
                    sqlx::QueryBuilder::new("SELECT dedup_key, state FROM herald_jobs WHERE dedup_key");
                push_id_list(&mut sql, &keys);
                sql.build_query_as().persistent(false).fetch_all(pool).await?
            });
            let cancelled: HashSet<String> = cancelled.into_iter().collect();
            let states: HashMap<String, String> = states.into_iter().collect();
            for (id, key) in chunk.iter().zip(&keys) {
                if cancelled.contains(key) {
                    revoked.cancelled.push(id.clone());
                } else {
                    match states.get(key) {
                        None => revoked.unseen.push(id.clone()),
                        Some(state) => revoked.past.push((id.clone(), state.clone())),
                    }
                }
            }
        }
        Ok(revoked)
    }

    /// Which of `task_ids` are revoked now.
    pub async fn revoked_among(&self, task_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        let at = now();
        for ids in task_ids.chunks(ID_CHUNK) {
            let rows: Vec<String> = with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new("SELECT task_id FROM herald_celery_revoked WHERE expires_at > ");
                sql.push_bind(db_time(at));
                sql.push(" AND task_id");
                push_id_list(&mut sql, ids);
                sql.build_query_scalar().persistent(false).fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// The revokes in force, the most recent first, `limit` at most:
    /// (task id, revoked at, expires at).
    pub async fn recent_revokes(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        const SQL: &str = "SELECT task_id, revoked_at, expires_at FROM herald_celery_revoked \
             WHERE expires_at > $1 ORDER BY revoked_at DESC LIMIT $2";
        let rows = with_pool!(self, pool => {
            sqlx::query_as(SQL).bind(db_time(now())).bind(limit).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Celery's countdowns waiting in the ledger (queued, due later), the
    /// soonest first, `limit` at most: (task id, kind, payload, run at).
    pub async fn celery_countdowns(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, DateTime<Utc>)>, StoreError> {
        const SQL: &str = "SELECT dedup_key, kind, payload, run_at FROM herald_jobs \
             WHERE state = 'queued' AND run_at > $1 AND dedup_key LIKE 'celery:%' \
             ORDER BY run_at LIMIT $2";
        let rows: Vec<(String, String, String, DateTime<Utc>)> = with_pool!(self, pool => {
            sqlx::query_as(SQL).bind(db_time(now())).bind(limit).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, kind, payload, run_at)| {
                let id = key.strip_prefix("celery:").unwrap_or(&key).to_string();
                (id, kind, payload, run_at)
            })
            .collect())
    }

    /// Forgets the revokes that expired before `before`; how many.
    pub async fn forget_revoked_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM herald_celery_revoked WHERE expires_at < $1";
        let gone = with_pool!(self, pool => {
            sqlx::query(SQL).bind(db_time(before)).execute(pool).await?.rows_affected()
        });
        Ok(gone)
    }
}
