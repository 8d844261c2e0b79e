//! The figures the scan claims give: each scheduled scan's cron, whether it
//! is paused, the latest period a process claimed and how it ended, and its
//! next run.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Collector, Problems};
use crate::store::{ScanRun, StoreError};

/// A scheduled scan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScanStats {
    pub name: String,
    /// Its cron expression (six fields, UTC).
    pub schedule: String,
    pub paused: bool,
    /// The latest period a process claimed, which process, when it ended,
    /// and how many notifications it created (null while it runs).
    pub last_run: Option<DateTime<Utc>>,
    pub last_run_by: Option<String>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_created: Option<i32>,
    pub next_run: Option<DateTime<Utc>>,
}

impl Collector {
    /// The latest claim of each scheduled scan, in the schedules' order.
    pub(super) async fn scan_runs(&self) -> Vec<Result<Option<ScanRun>, StoreError>> {
        let mut runs = Vec::new();
        for schedule in &self.schedules {
            runs.push(self.store.last_scan_run(schedule.name).await);
        }
        runs
    }

    /// Each scheduled scan: its cron, last run and next run.
    pub(super) fn scan_stats(
        &self,
        runs: Vec<Result<Option<ScanRun>, StoreError>>,
        paused: &BTreeSet<String>,
        now: DateTime<Utc>,
        problems: &mut Problems,
    ) -> Vec<ScanStats> {
        let mut scans = Vec::new();
        for (schedule, last) in self.schedules.iter().zip(runs) {
            let last = problems.or_default("scans", last);
            scans.push(ScanStats {
                name: schedule.name.to_string(),
                schedule: schedule.expression.clone(),
                paused: paused.contains(schedule.job.kind()),
                last_run: last.as_ref().map(|run| run.period_start),
                last_run_by: last.as_ref().map(|run| run.claimed_by.clone()),
                last_finished: last.as_ref().and_then(|run| run.finished_at),
                last_created: last.as_ref().and_then(|run| run.created),
                next_run: schedule.cron.find_next_occurrence(&now, false).ok(),
            });
        }
        scans
    }
}
