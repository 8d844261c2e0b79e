//! The fleet as the dashboard reads it: each process's heartbeat and
//! figures (`herald_processes`), what it counted per 10-second window
//! (`herald_samples`), the paused job kinds (`herald_paused_kinds`), what
//! each scan period came to, and the outbox backlog. See docs/dashboard.md.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, now, with_pool};

/// One process's heartbeat.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    /// Unique per process start.
    pub id: &'a str,
    /// `run`, `worker` or `sidecar`.
    pub role: &'a str,
    pub host: &'a str,
    pub pid: i32,
    pub version: &'a str,
    pub started_at: DateTime<Utc>,
    /// The process's figures now, as JSON.
    pub figures: &'a str,
    /// The start of the current sample window and what the process counted
    /// in it so far, as JSON.
    pub window: DateTime<Utc>,
    pub window_figures: &'a str,
}

/// A process as its last heartbeat left it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProcessRow {
    pub id: String,
    pub role: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub figures: String,
}

/// What one process counted in one window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SampleRow {
    pub at: DateTime<Utc>,
    pub process_id: String,
    pub figures: String,
}

/// The latest claimed period of a scan.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScanRun {
    pub period_start: DateTime<Utc>,
    pub claimed_by: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub created: Option<i32>,
}

/// Entries of the outbox not yet published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub entries: i64,
    /// Notifications the entries list.
    pub notifications: i64,
    /// The oldest entry's next attempt (its age says how long it waits).
    pub oldest: Option<DateTime<Utc>>,
}

impl Store {
    /// Writes a heartbeat: the process's row, and its row of the current
    /// sample window.
    pub async fn heartbeat(&self, beat: &Beat<'_>) -> Result<(), StoreError> {
        const PROCESS: &str = "INSERT INTO herald_processes (id, role, host, pid, version, \
             started_at, seen_at, stopped_at, figures) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, figures = excluded.figures, \
             stopped_at = NULL";
        const SAMPLE: &str = "INSERT INTO herald_samples (at, process_id, figures) \
             VALUES ($1, $2, $3) ON CONFLICT (at, process_id) DO UPDATE SET figures = excluded.figures";
        let seen = now();
        with_pool!(self, pool => {
            sqlx::query(PROCESS)
                .bind(beat.id)
                .bind(beat.role)
                .bind(beat.host)
                .bind(beat.pid)
                .bind(beat.version)
                .bind(db_time(beat.started_at))
                .bind(db_time(seen))
                .bind(beat.figures)
                .execute(pool)
                .await?;
            sqlx::query(SAMPLE)
                .bind(db_time(beat.window))
                .bind(beat.id)
                .bind(beat.window_figures)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A process stopping says so, so the dashboard drops it at once.
    pub async fn process_stopped(&self, id: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE herald_processes SET stopped_at = $2 WHERE id = $1";
        with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(db_time(now())).execute(pool).await?;
        });
        Ok(())
    }

    /// Deletes the rows of processes silent since `before` and the samples
    /// of windows before it.
    pub async fn prune_fleet(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        const PROCESSES: &str = "DELETE FROM herald_processes WHERE seen_at < $1";
        const SAMPLES: &str = "DELETE FROM herald_samples WHERE at < $1";
        with_pool!(self, pool => {
            sqlx::query(PROCESSES).bind(db_time(before)).execute(pool).await?;
            sqlx::query(SAMPLES).bind(db_time(before)).execute(pool).await?;
        });
        Ok(())
    }

    /// The processes seen since `since` and not stopped, oldest first.
    pub async fn live_processes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<ProcessRow>, StoreError> {
        const SQL: &str = "SELECT id, role, host, pid, version, started_at, seen_at, figures \
             FROM herald_processes WHERE seen_at >= $1 AND stopped_at IS NULL \
             ORDER BY started_at, id";
        with_pool!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(db_time(since))
            .fetch_all(pool)
            .await?))
    }

    /// The sample rows of windows starting at or after `since`.
    pub async fn samples_since(&self, since: DateTime<Utc>) -> Result<Vec<SampleRow>, StoreError> {
        const SQL: &str =
            "SELECT at, process_id, figures FROM herald_samples WHERE at >= $1 ORDER BY at";
        with_pool!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(db_time(since))
            .fetch_all(pool)
            .await?))
    }

    /// The paused job kinds.
    pub async fn paused_kinds(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT kind FROM herald_paused_kinds ORDER BY kind";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL).fetch_all(pool).await?))
    }

    /// Pauses `kind`; false when it was paused already.
    pub async fn pause_kind(&self, kind: &str) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO herald_paused_kinds (kind, paused_at) VALUES ($1, $2) \
             ON CONFLICT (kind) DO NOTHING";
        with_pool!(self, pool => Ok(sqlx::query(SQL)
            .bind(kind)
            .bind(db_time(now()))
            .execute(pool)
            .await?
            .rows_affected()
            == 1))
    }

    /// Resumes `kind`; false when it was not paused.
    pub async fn resume_kind(&self, kind: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM herald_paused_kinds WHERE kind = $1";
        with_pool!(self, pool => Ok(sqlx::query(SQL)
            .bind(kind)
            .execute(pool)
            .await?
            .rows_affected()
            == 1))
    }

    /// Records what the scan period `(name, period_start)` came to.
    pub async fn finish_period(
        &self,
        name: &str,
        period_start: DateTime<Utc>,
        created: usize,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE herald_schedule_runs SET finished_at = $3, created = $4 \
             WHERE name = $1 AND period_start = $2";
        let created = i32::try_from(created).unwrap_or(i32::MAX);
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(name)
                .bind(db_time(period_start))
                .bind(db_time(now()))
                .bind(created)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The latest claimed period of scan `name` (the primary key's order).
    pub async fn last_scan_run(&self, name: &str) -> Result<Option<ScanRun>, StoreError> {
        const SQL: &str = "SELECT period_start, claimed_by, finished_at, created \
             FROM herald_schedule_runs WHERE name = $1 ORDER BY period_start DESC LIMIT 1";
        with_pool!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(name)
            .fetch_optional(pool)
            .await?))
    }

    /// The outbox's entries, the notifications they list, and the oldest.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        const SQL: &str = "SELECT count(*), CAST(COALESCE(sum(pending), 0) AS bigint), \
             min(next_attempt_at) FROM herald_outbox";
        with_pool!(self, pool => {
            let (entries, notifications, oldest): (i64, i64, Option<DateTime<Utc>>) =
                sqlx::query_as(SQL).fetch_one(pool).await?;
            Ok(OutboxBacklog { entries, notifications, oldest })
        })
    }
}

impl Store {
    /// Whether `kind` is paused; a database without the table (not yet
    /// migrated) pauses nothing.
    pub async fn is_kind_paused(&self, kind: &str) -> Result<bool, StoreError> {
        Ok(self.paused_kinds().await?.iter().any(|k| k == kind))
    }
}
