//! The job ledger as the dashboard reads and changes it: open jobs counted
//! per kind, history searched by id, dedup key, user, kind and state (each
//! through an index, see migrations `*_job_history_indexes.sql`), and the
//! operator's cancel and discard.
//!
//! Counting done jobs per minute from the ledger would read every job of
//! the minute each second; those counts come from the processes' sample
//! windows instead (see `crate::fleet`).

use chrono::{DateTime, Utc};

use super::jobs::{JobRow, job_columns};
use super::{Backend, JobRecord, JobState, Store, StoreError, now, with_pool};

/// Open (and dead) jobs of one kind in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCount {
    pub kind: String,
    pub state: JobState,
    /// Due later than the time counted at (scheduled, or a retry waiting
    /// for its backoff).
    pub later: bool,
    pub count: i64,
}

/// What to look for in the history.
#[derive(Debug, Clone, Default)]
pub struct JobSearch {
    /// A job id, a dedup key, or a user id (the user a payload names:
    /// `user_id`, `uploaded_by` or `changed_by`).
    pub text: Option<String>,
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The user a job's payload names, as the history index computes it.
const USER_PG: &str = "COALESCE(payload::jsonb ->> 'user_id', payload::jsonb ->> 'uploaded_by', \
     payload::jsonb ->> 'changed_by')";
const USER_SQLITE: &str = "CAST(COALESCE(json_extract(payload, '$.user_id'), \
     json_extract(payload, '$.uploaded_by'), json_extract(payload, '$.changed_by')) AS text)";

/// Open and dead jobs per kind, state and whether due later than $1: only
/// those states' rows, through `herald_jobs_state`.
const OPEN_COUNTS: &str = "SELECT kind, state, CASE WHEN run_at > $1 THEN 1 ELSE 0 END AS later, \
     count(*) FROM herald_jobs WHERE state IN ('queued', 'retrying', 'dead') \
     GROUP BY kind, state, CASE WHEN run_at > $1 THEN 1 ELSE 0 END";

/// Why an operator's change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    /// The job is in this state, which the change does not apply to.
    InState(JobState),
}

impl Store {
    /// Jobs queued, retrying or dead, per kind and state, split by whether
    /// they are due after `at`: one read of those states' rows through the
    /// state index (done jobs, the ledger's bulk, are not read).
    pub async fn open_job_counts(&self, at: DateTime<Utc>) -> Result<Vec<OpenCount>, StoreError> {
        let rows: Vec<(String, String, i32, i64)> = match self {
            // One backend, no parallel workers: they would only spread the
            // same work over more processes, next to a busy worker.
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
                    .execute(&mut *tx)
                    .await?;
                let rows = sqlx::query_as(OPEN_COUNTS)
                    .bind(super::postgres_time(at))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
            Store::Sqlite(pool) => {
                sqlx::query_as(OPEN_COUNTS)
                    .bind(super::sqlite_time(at))
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(kind, state, later, count)| {
                Some(OpenCount {
                    kind,
                    state: JobState::from_name(&state)?,
                    later: later == 1,
                    count,
                })
            })
            .collect())
    }

    /// The jobs matching `search`, newest first: by creation (the ULID
    /// order) unless a state is asked for, then by last change.
    pub async fn search_jobs(&self, search: &JobSearch) -> Result<Vec<JobRecord>, StoreError> {
        let limit = search.limit.clamp(1, 500);
        let Some(text) = search.text.as_deref().filter(|t| !t.is_empty()) else {
            return self.list_jobs(search, None, limit).await;
        };
        // Each way of matching the text through its own index, merged.
        let mut found: Vec<JobRecord> = Vec::new();
        for column in [Match::Id, Match::DedupKey, Match::User] {
            if column == Match::User && text.parse::<i64>().is_err() {
                continue;
            }
            for job in self.list_jobs(search, Some((column, text)), limit).await? {
                if !found.iter().any(|seen| seen.id == job.id) {
                    found.push(job);
                }
            }
        }
        if search.state.is_some() {
            found.sort_by(|a, b| (b.updated_at, &b.id).cmp(&(a.updated_at, &a.id)));
        } else {
            found.sort_by(|a, b| b.id.cmp(&a.id));
        }
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn list_jobs(
        &self,
        search: &JobSearch,
        matching: Option<(Match, &str)>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let (sql, binds) = self.search_sql(search, matching);
        with_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql));
            for bind in binds {
                query = query.bind(bind);
            }
            let rows = query.bind(limit).fetch_all(pool).await?;
            Ok(rows.into_iter().map(JobRecord::from).collect())
        })
    }

    /// The statement of one history search and its text parameters (the
    /// limit is the last parameter, after them).
    fn search_sql(
        &self,
        search: &JobSearch,
        matching: Option<(Match, &str)>,
    ) -> (String, Vec<String>) {
        let mut sql = String::from(concat!(
            "SELECT ",
            job_columns!(),
            " FROM herald_jobs WHERE 1 = 1"
        ));
        let mut binds = Vec::new();
        if let Some((column, text)) = matching {
            let user = match self.backend() {
                Backend::Postgres => USER_PG,
                Backend::Sqlite => USER_SQLITE,
            };
            let column = match column {
                Match::Id => "id",
                Match::DedupKey => "dedup_key",
                Match::User => user,
            };
            binds.push(text.to_string());
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        }
        if let Some(kind) = &search.kind {
            binds.push(kind.clone());
            sql.push_str(&format!(" AND kind = ${}", binds.len()));
        }
        match search.state {
            Some(state) => {
                binds.push(state.as_str().to_string());
                sql.push_str(&format!(
                    " AND state = ${} ORDER BY updated_at DESC, id DESC",
                    binds.len()
                ));
            }
            None => sql.push_str(" ORDER BY id DESC"),
        }
        sql.push_str(&format!(" LIMIT ${}", binds.len() + 1));
        (sql, binds)
    }

    /// The query plan of each of the dashboard's reads of the ledger (open
    /// counts, dead jobs, and every way of searching the history), by name:
    /// `EXPLAIN` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite, with sample
    /// parameters. For the test that keeps them on indexes.
    pub async fn explain_dashboard_reads(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut reads: Vec<(String, String, Vec<String>)> = vec![(
            "open counts".into(),
            OPEN_COUNTS.replace("$1", "'2026-01-01 00:00:00'"),
            Vec::new(),
        )];
        let dead = JobSearch {
            state: Some(JobState::Dead),
            limit: 20,
            ..JobSearch::default()
        };
        let by_kind = JobSearch {
            kind: Some("notify".into()),
            limit: 50,
            ..JobSearch::default()
        };
        let by_kind_and_state = JobSearch {
            kind: Some("notify".into()),
            state: Some(JobState::Queued),
            limit: 50,
            ..JobSearch::default()
        };
        let plain = JobSearch {
            limit: 50,
            ..JobSearch::default()
        };
        let searches = [
            ("dead jobs", &dead, None),
            ("history", &plain, None),
            ("history by kind", &by_kind, None),
            ("history by kind and state", &by_kind_and_state, None),
            (
                "history by id",
                &plain,
                Some((Match::Id, "01JDASHBOARD0000000000000")),
            ),
            (
                "history by dedup key",
                &plain,
                Some((Match::DedupKey, "key-1")),
            ),
            ("history by user", &plain, Some((Match::User, "42"))),
        ];
        for (name, search, matching) in searches {
            let (sql, mut binds) = self.search_sql(search, matching);
            binds.push(search.limit.to_string());
            // Parameters inlined as literals (the limit as a number).
            let mut sql = sql;
            for (i, bind) in binds.iter().enumerate().rev() {
                let literal = if i + 1 == binds.len() {
                    bind.clone()
                } else {
                    format!("'{}'", bind.replace('\'', "''"))
                };
                sql = sql.replace(&format!("${}", i + 1), &literal);
            }
            reads.push((name.into(), sql, Vec::new()));
        }
        let mut plans = Vec::new();
        for (name, sql, _) in reads {
            let plan = with_pool!(self, pool => {
                match self.backend() {
                    Backend::Postgres => {
                        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                            .fetch_all(pool)
                            .await?;
                        lines.join("\n")
                    }
                    Backend::Sqlite => {
                        let rows: Vec<(i64, i64, i64, String)> =
                            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                                .fetch_all(pool)
                                .await?;
                        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
                    }
                }
            });
            plans.push((name, plan));
        }
        Ok(plans)
    }

    /// Cancels a queued or scheduled (or retrying) job: it never runs. An
    /// attempt already running may still finish; its end is not recorded.
    pub async fn cancel_job(&self, id: &str) -> Result<Result<(), Refusal>, StoreError> {
        const SQL: &str = "UPDATE herald_jobs SET state = 'cancelled', updated_at = $2 \
             WHERE id = $1 AND state IN ('queued', 'retrying')";
        self.operator_change(SQL, id).await
    }

    /// Discards a dead job: it is not run again (retry refuses it).
    pub async fn discard_job(&self, id: &str) -> Result<Result<(), Refusal>, StoreError> {
        const SQL: &str = "UPDATE herald_jobs SET state = 'discarded', updated_at = $2 \
             WHERE id = $1 AND state = 'dead'";
        self.operator_change(SQL, id).await
    }

    async fn operator_change(
        &self,
        sql: &'static str,
        id: &str,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let changed = with_pool!(self, pool => sqlx::query(sql)
            .bind(id)
            .bind(db_time(now()))
            .execute(pool)
            .await?
            .rows_affected());
        if changed == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(match self.get_job(id).await? {
            Some(job) => Refusal::InState(job.state),
            None => Refusal::NotFound,
        }))
    }
}

/// Which index a search text goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Id,
    DedupKey,
    User,
}
