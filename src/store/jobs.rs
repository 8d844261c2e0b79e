//! `herald_jobs`: the job ledger. Every submitted job gets a row here before
//! it is queued; the worker records each attempt, its error, and the end
//! state (done or dead). Dedup keys are unique, so a repeated submission
//! finds the job it repeats.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use std::collections::{HashMap, HashSet};

use super::{Store, StoreError, now, push_id_list, with_pool};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue (or for its `run_at`), or running now: an
    /// attempt is recorded when it ends, so a running job writes nothing.
    Queued,
    /// Failed; queued again after a backoff.
    Retrying,
    Done,
    /// Failed on its last attempt (or permanently); `herald jobs retry` runs it again.
    Dead,
    /// Cancelled by an operator while queued or scheduled; it never runs.
    Cancelled,
    /// A dead job an operator discarded; it is not run again.
    Discarded,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// The state called `name`, if any.
    pub fn from_name(name: &str) -> Option<JobState> {
        Some(match name {
            "queued" => JobState::Queued,
            "retrying" => JobState::Retrying,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            "discarded" => JobState::Discarded,
            _ => return None,
        })
    }
}

/// A ledger row (also the API's answer for one job).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobRecord {
    /// A ULID, given at submission.
    pub id: String,
    pub kind: String,
    /// The payload as checked against the kind's schema.
    pub payload: serde_json::Value,
    pub dedup_key: Option<String>,
    pub state: JobState,
    /// Attempts ended so far (an attempt is recorded when it ends).
    pub attempts: i32,
    pub max_attempts: i32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the job is due (a retry moves it to after the backoff).
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    kind: String,
    payload: String,
    dedup_key: Option<String>,
    state: String,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<JobRow> for JobRecord {
    fn from(row: JobRow) -> Self {
        JobRecord {
            id: row.id,
            kind: row.kind,
            payload: serde_json::from_str(&row.payload).unwrap_or(serde_json::Value::Null),
            dedup_key: row.dedup_key,
            state: JobState::from_name(&row.state).unwrap_or(JobState::Queued),
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            last_error: row.last_error,
            run_at: row.run_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// What [`Store::insert_jobs`] did with one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    New,
    /// The dedup key belongs to this job; nothing was recorded.
    Existing(Box<JobRecord>),
}

/// A job to record.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    pub dedup_key: Option<&'a str>,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
}

/// Jobs one ledger insert records at most (9 parameters each).
pub(crate) const INSERT_CHUNK: usize = 500;

macro_rules! job_columns {
    () => {
        "id, kind, payload, dedup_key, state, attempts, max_attempts, \
         last_error, run_at, created_at, updated_at"
    };
}
pub(super) use job_columns;

impl Store {
    /// Records queued jobs, all or none, answering in their order; one
    /// statement per [`INSERT_CHUNK`] jobs. A job whose dedup key is taken,
    /// by an earlier job or by one before it in `jobs`, is not recorded: its
    /// answer is the job holding the key.
    pub async fn insert_jobs(&self, jobs: &[NewJob<'_>]) -> Result<Vec<Recorded>, StoreError> {
        let at = now();
        let inserted = match self {
            Store::Postgres(pool) => insert_jobs_postgres(pool, jobs, at).await?,
            Store::Sqlite(pool) => insert_jobs_sqlite(pool, jobs, at).await?,
        };
        let taken: Vec<String> = jobs
            .iter()
            .filter(|job| !inserted.contains(job.id))
            .filter_map(|job| job.dedup_key.map(str::to_string))
            .collect();
        let holders = self.jobs_by_dedup_keys(&taken).await?;
        jobs.iter()
            .map(|job| {
                if inserted.contains(job.id) {
                    return Ok(Recorded::New);
                }
                // The holder vanished in between: the key is free again.
                let holder = job.dedup_key.and_then(|key| holders.get(key));
                holder.map_or(Err(StoreError::Conflict), |holder| {
                    Ok(Recorded::Existing(Box::new(holder.clone())))
                })
            })
            .collect()
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", job_columns!(), " FROM herald_jobs WHERE id = $1");
        with_pool!(self, pool => Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .map(JobRecord::from)))
    }

    /// The job holding dedup key `key`, if any.
    pub async fn get_job_by_dedup_key(&self, key: &str) -> Result<Option<JobRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM herald_jobs WHERE dedup_key = $1"
        );
        with_pool!(self, pool => Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(key)
            .fetch_optional(pool)
            .await?
            .map(JobRecord::from)))
    }

    /// The jobs holding `keys`, by key.
    async fn jobs_by_dedup_keys(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, JobRecord>, StoreError> {
        let mut holders = HashMap::with_capacity(keys.len());
        for keys in keys.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(concat!(
                    "SELECT ", job_columns!(), " FROM herald_jobs WHERE dedup_key"
                ));
                push_id_list(&mut sql, keys);
                let rows: Vec<JobRow> = sql.build_query_as().persistent(false).fetch_all(pool).await?;
                holders.extend(rows.into_iter().map(JobRecord::from).filter_map(|job| {
                    Some((job.dedup_key.clone()?, job))
                }));
            });
        }
        Ok(holders)
    }

    /// The jobs among `ids` that have not ended (not done, not dead), each
    /// with the number its next attempt gets. A job missing from the answer
    /// ended earlier (its queue entry is a duplicate). Reads only: the
    /// attempt is written when it ends.
    pub async fn next_job_attempts(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, i32>, StoreError> {
        let mut next = HashMap::with_capacity(ids.len());
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "SELECT id, attempts + 1 FROM herald_jobs WHERE state IN ('queued', 'retrying') AND id",
                );
                push_id_list(&mut sql, ids);
                let rows: Vec<(String, i32)> = sql.build_query_as().persistent(false).fetch_all(pool).await?;
                next.extend(rows);
            });
        }
        Ok(next)
    }

    /// Records one successful attempt of each of `ids`: state `done`.
    pub async fn finish_jobs_done(&self, ids: &[String]) -> Result<(), StoreError> {
        let at = now();
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql =
                    sqlx::QueryBuilder::new("UPDATE herald_jobs SET state = 'done', attempts = attempts + 1, updated_at = ");
                sql.push_bind(db_time(at));
                sql.push(" WHERE state IN ('queued', 'retrying') AND id");
                push_id_list(&mut sql, ids);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Records one failed attempt: state `retrying` (again at `run_at`) or
    /// `dead`, keeping `error` as the last error.
    pub async fn record_failed_attempt(
        &self,
        id: &str,
        state: JobState,
        error: Option<&str>,
        run_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        // A job another entry already ended stays ended.
        const SQL: &str = "UPDATE herald_jobs SET state = $2, attempts = attempts + 1, \
             last_error = COALESCE($3, last_error), run_at = COALESCE($4, run_at), \
             updated_at = $5 WHERE id = $1 AND state IN ('queued', 'retrying')";
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(id)
                .bind(state.as_str())
                .bind(error)
                .bind(run_at.map(db_time))
                .bind(db_time(now()))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Makes a dead job queued again with a fresh set of attempts, marked
    /// unqueued until [`Store::mark_queued`]. False when `id` is not a dead
    /// job.
    pub async fn revive_job(&self, id: &str) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE herald_jobs SET state = 'queued', attempts = 0, \
             run_at = $2, updated_at = $2 WHERE id = $1 AND state = 'dead'";
        const MARK: &str = "INSERT INTO herald_unqueued (job_id, since) VALUES ($1, $2) \
             ON CONFLICT (job_id) DO UPDATE SET since = excluded.since";
        let at = now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revived = sqlx::query(SQL)
                .bind(id)
                .bind(db_time(at))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if revived {
                sqlx::query(MARK).bind(id).bind(db_time(at)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(revived)
        })
    }

    /// The queue took these jobs' entries: they are no longer unqueued.
    pub async fn mark_queued(&self, ids: &[String]) -> Result<(), StoreError> {
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new("DELETE FROM herald_unqueued WHERE job_id");
                push_id_list(&mut sql, ids);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Claims up to `limit` jobs marked unqueued since before `before`
    /// (their push failed, or their process died before it), holding each
    /// claim until `lease`: the jobs still open, to queue again. Marks of
    /// jobs that ended or are gone are removed.
    pub async fn claim_unqueued(
        &self,
        before: DateTime<Utc>,
        lease: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        const CLAIM: &str = "UPDATE herald_unqueued SET since = $1 WHERE job_id IN \
             (SELECT job_id FROM herald_unqueued WHERE since < $2 ORDER BY since LIMIT $3 {lock}) \
             RETURNING job_id";
        let sql = match self.backend() {
            super::Backend::Postgres => CLAIM.replace("{lock}", "FOR UPDATE SKIP LOCKED"),
            super::Backend::Sqlite => CLAIM.replace("{lock}", ""),
        };
        let claimed: Vec<String> = with_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(db_time(lease))
            .bind(db_time(before))
            .bind(limit)
            .fetch_all(pool)
            .await?);
        let mut open = Vec::new();
        let mut ended = Vec::new();
        for id in claimed {
            match self.get_job(&id).await? {
                Some(job) if matches!(job.state, JobState::Queued | JobState::Retrying) => {
                    open.push(job)
                }
                _ => ended.push(id),
            }
        }
        self.mark_queued(&ended).await?;
        Ok(open)
    }

    /// Jobs in `state`, most recently changed first, at most `limit`.
    pub async fn jobs_in_state(
        &self,
        state: JobState,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM herald_jobs WHERE state = $1 ORDER BY updated_at DESC, id DESC LIMIT $2"
        );
        with_pool!(self, pool => Ok(sqlx::query_as::<_, JobRow>(SQL)
            .bind(state.as_str())
            .bind(limit)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(JobRecord::from)
            .collect()))
    }

    /// Deletes ended jobs (done, cancelled, discarded; never dead) last changed
    /// before `before`, in chunks; how many.
    /// Their dedup keys are free again afterwards.
    pub async fn prune_done_jobs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM herald_jobs WHERE id IN (SELECT id FROM herald_jobs \
             WHERE state IN ('done', 'cancelled', 'discarded') AND updated_at < $1 LIMIT $2)";
        let mut pruned = 0;
        loop {
            let chunk = super::ID_CHUNK as i64;
            let deleted = with_pool!(self, pool => sqlx::query(SQL)
                .bind(db_time(before))
                .bind(chunk)
                .execute(pool)
                .await?
                .rows_affected());
            pruned += deleted;
            if deleted < chunk as u64 {
                return Ok(pruned);
            }
        }
    }

    /// How many jobs are in each unfinished state (queue depth).
    pub async fn count_jobs(&self, state: JobState) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT count(*) FROM herald_jobs WHERE state = $1";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL)
            .bind(state.as_str())
            .fetch_one(pool)
            .await?))
    }
}

/// PostgreSQL: one statement records a chunk and marks its new jobs
/// unqueued (a statement is atomic, so one chunk needs no transaction of its
/// own: one round trip in all); each column is bound as one array, so the
/// text is the same whatever the chunk's size. Answers the ids recorded.
async fn insert_jobs_postgres(
    pool: &sqlx::PgPool,
    jobs: &[NewJob<'_>],
    at: DateTime<Utc>,
) -> Result<HashSet<String>, StoreError> {
    const INSERT: &str = "WITH recorded AS (INSERT INTO herald_jobs (id, kind, payload, \
         dedup_key, state, attempts, max_attempts, run_at, created_at, updated_at) \
         SELECT i, k, p, d, 'queued', 0, m, r, $7, $7 FROM unnest($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::int4[], $6::timestamptz[]) AS x (i, k, p, d, m, r) \
         ON CONFLICT DO NOTHING RETURNING id), \
         marked AS (INSERT INTO herald_unqueued (job_id, since) SELECT id, $7 FROM recorded) \
         SELECT id FROM recorded";
    let statement = |chunk: &[NewJob<'_>]| {
        let column = |get: fn(&NewJob<'_>) -> String| chunk.iter().map(get).collect::<Vec<_>>();
        sqlx::query_scalar::<_, String>(INSERT)
            .bind(column(|job| job.id.to_string()))
            .bind(column(|job| job.kind.to_string()))
            .bind(column(|job| job.payload.to_string()))
            .bind(
                chunk
                    .iter()
                    .map(|job| job.dedup_key.map(str::to_string))
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|job| job.max_attempts).collect::<Vec<_>>())
            .bind(chunk.iter().map(|job| job.run_at).collect::<Vec<_>>())
            .bind(at)
    };
    if jobs.len() <= INSERT_CHUNK {
        return Ok(statement(jobs).fetch_all(pool).await?.into_iter().collect());
    }
    // Several chunks: one transaction, so a failure records none of them.
    let mut inserted = HashSet::with_capacity(jobs.len());
    let mut tx = pool.begin().await?;
    for chunk in jobs.chunks(INSERT_CHUNK) {
        inserted.extend(statement(chunk).fetch_all(&mut *tx).await?);
    }
    tx.commit().await?;
    Ok(inserted)
}

/// SQLite: one transaction, a multi-row insert and its unqueued marks per
/// chunk. Answers the ids recorded.
async fn insert_jobs_sqlite(
    pool: &sqlx::SqlitePool,
    jobs: &[NewJob<'_>],
    at: DateTime<Utc>,
) -> Result<HashSet<String>, StoreError> {
    use super::sqlite_time as db_time;
    let mut inserted = HashSet::with_capacity(jobs.len());
    let mut tx = pool.begin().await?;
    for chunk in jobs.chunks(INSERT_CHUNK) {
        let mut sql = sqlx::QueryBuilder::new(
            "INSERT INTO herald_jobs (id, kind, payload, dedup_key, state, attempts, \
             max_attempts, run_at, created_at, updated_at) ",
        );
        sql.push_values(chunk, |mut row, job| {
            row.push_bind(job.id.to_string())
                .push_bind(job.kind.to_string())
                .push_bind(job.payload.to_string())
                .push_bind(job.dedup_key.map(str::to_string))
                .push("'queued', 0")
                .push_bind(job.max_attempts)
                .push_bind(db_time(job.run_at))
                .push_bind(db_time(at))
                .push_bind(db_time(at));
        });
        sql.push(" ON CONFLICT DO NOTHING RETURNING id");
        let ids: Vec<String> = sql.build_query_scalar().fetch_all(&mut *tx).await?;
        if !ids.is_empty() {
            let mut marks = sqlx::QueryBuilder::new("INSERT INTO herald_unqueued (job_id, since) ");
            marks.push_values(&ids, |mut row, id| {
                row.push_bind(id.clone()).push_bind(db_time(at));
            });
            marks.build().execute(&mut *tx).await?;
        }
        inserted.extend(ids);
    }
    tx.commit().await?;
    Ok(inserted)
}
