//! The figures the job ledger gives: open jobs per kind and state (counted
//! at most as often as the count's own cost allows), their totals, and the
//! most recently failed dead jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Cached, Collector, Problems};
use crate::fleet::figures::WindowFigures;
use crate::jobs::KINDS;
use crate::store::{JobRecord, JobState, OpenCount, StoreError};

/// Dead jobs listed at most.
pub const DEAD_LIMIT: i64 = 20;

/// The share of the time the ledger counts may take: they are read again
/// once `took / COUNT_SHARE` has passed (and at most once per refresh).
const COUNT_SHARE: f64 = 0.01;

/// One job kind's jobs.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct KindStats {
    pub kind: String,
    /// Paused from the dashboard: its jobs wait.
    pub paused: bool,
    /// Queued and due, not held by a process.
    pub waiting: i64,
    /// Queued for later (`run_at` ahead).
    pub scheduled: i64,
    /// Held by a process now (fetched, in a batch, or running).
    pub running: i64,
    /// Failed, queued again after a backoff.
    pub retrying: i64,
    pub dead: i64,
    /// Attempts that ended done over the last six 10-second windows (the
    /// current one partly).
    pub done_last_minute: i64,
    /// Attempts that failed over the same windows.
    pub failed_last_minute: i64,
}

/// Every kind's counts together.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Totals {
    pub waiting: i64,
    pub scheduled: i64,
    pub running: i64,
    pub retrying: i64,
    pub dead: i64,
    pub done_last_minute: i64,
    pub failed_last_minute: i64,
}

/// A dead job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadJob {
    pub id: String,
    pub kind: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dedup_key: Option<String>,
    /// When it died.
    pub updated_at: DateTime<Utc>,
}

impl From<JobRecord> for DeadJob {
    fn from(job: JobRecord) -> Self {
        DeadJob {
            id: job.id,
            kind: job.kind,
            attempts: job.attempts,
            last_error: job.last_error,
            dedup_key: job.dedup_key,
            updated_at: job.updated_at,
        }
    }
}

impl Collector {
    /// Whether the open jobs are counted afresh: the last count is older
    /// than the refresh interval (or than its own cost allows).
    pub(super) fn count_due(&self, cached: &Cached) -> bool {
        let refresh = self.settings.dashboard.refresh_interval.mul_f64(0.9);
        cached
            .counts
            .as_ref()
            .is_none_or(|(at, _, took, _)| at.elapsed() >= refresh.max(took.div_f64(COUNT_SHARE)))
    }

    /// Counts the open jobs when `due`, and how long it took; `None` keeps
    /// the cached count.
    pub(super) async fn count_if(
        &self,
        due: bool,
        now: DateTime<Utc>,
    ) -> Option<(Result<Vec<OpenCount>, StoreError>, Duration)> {
        if !due {
            return None;
        }
        let started = Instant::now();
        let counts = self.store.open_job_counts(now).await;
        Some((counts, started.elapsed()))
    }

    /// The counts to show and when they were read: fresh ones are cached
    /// (and their cost noted), else the cached ones.
    pub(super) fn counts(
        &self,
        cached: &mut Cached,
        counted: Option<(Result<Vec<OpenCount>, StoreError>, Duration)>,
        now: DateTime<Utc>,
        problems: &mut Problems,
    ) -> (DateTime<Utc>, Vec<OpenCount>) {
        match counted {
            Some((Ok(counts), took)) => {
                if let Ok(mut cost) = self.cost.lock() {
                    cost.counts += 1;
                    cost.counting += took;
                }
                cached.counts = Some((Instant::now(), now, took, counts.clone()));
                (now, counts)
            }
            Some((Err(e), _)) => {
                problems.note("job counts", e);
                cached.counts = None;
                (now, Vec::new())
            }
            None => match &cached.counts {
                Some((_, at, _, counts)) => (*at, counts.clone()),
                None => (now, Vec::new()),
            },
        }
    }
}

/// Per kind: waiting, scheduled, running, retrying, dead, and the last
/// minute's ends; and their totals.
pub(super) fn kind_stats(
    counts: &[OpenCount],
    running: &BTreeMap<&str, i64>,
    paused: &BTreeSet<String>,
    minute: &WindowFigures,
) -> (Vec<KindStats>, Totals) {
    let mut kinds = Vec::new();
    let mut totals = Totals::default();
    for kind in KINDS {
        let count = |state: JobState, later: Option<bool>| -> i64 {
            counts
                .iter()
                .filter(|c| c.kind == kind && c.state == state)
                .filter(|c| later.is_none_or(|l| c.later == l))
                .map(|c| c.count)
                .sum()
        };
        let held = running.get(kind).copied().unwrap_or(0);
        let in_window = minute.jobs.get(kind).cloned().unwrap_or_default();
        let stats = KindStats {
            kind: kind.to_string(),
            paused: paused.contains(kind),
            waiting: (count(JobState::Queued, Some(false)) - held).max(0),
            scheduled: count(JobState::Queued, Some(true)),
            running: held,
            retrying: count(JobState::Retrying, None),
            dead: count(JobState::Dead, None),
            done_last_minute: in_window.done as i64,
            failed_last_minute: in_window.failed as i64,
        };
        totals.waiting += stats.waiting;
        totals.scheduled += stats.scheduled;
        totals.running += stats.running;
        totals.retrying += stats.retrying;
        totals.dead += stats.dead;
        totals.done_last_minute += stats.done_last_minute;
        totals.failed_last_minute += stats.failed_last_minute;
        kinds.push(stats);
    }
    (kinds, totals)
}
