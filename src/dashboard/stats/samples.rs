//! The figures the processes' 10-second sample windows give: throughput,
//! run times and deliveries over the last 15 minutes, and the jobs done and
//! failed in the last minute. Recent windows are read each time, older ones
//! kept from before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Cached, Collector};
use crate::fleet::figures::{self, WINDOW_SECONDS, WindowFigures, quantile};
use crate::store::StoreError;

/// How far back the charts go.
pub const SERIES_SPAN: TimeDelta = TimeDelta::minutes(15);

/// Windows younger than this are read again each time (their processes are
/// still adding to them); older ones come from the cache, all read afresh
/// once a minute.
const RECENT: TimeDelta = TimeDelta::seconds(30);

/// One 10-second window of the fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The window's start.
    pub at: DateTime<Utc>,
    /// Jobs done per second over the window.
    pub done_per_second: f64,
    pub failed_per_second: f64,
    /// Run-time quantiles in milliseconds (from the run-time histogram's
    /// buckets); null without jobs.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Events delivered to WebSocket clients per second.
    pub deliveries_per_second: f64,
}

impl Collector {
    /// The sample windows of the last 15 minutes, by (window, process):
    /// the recent ones read now, older ones from the cache (all read
    /// afresh once a minute).
    pub(super) async fn windows(
        &self,
        cached: &mut Cached,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(DateTime<Utc>, String), WindowFigures>, StoreError> {
        let first = figures::window_of(now - SERIES_SPAN);
        let full = cached
            .full_read
            .is_none_or(|at| at.elapsed() > Duration::from_secs(60));
        let since = if full {
            first
        } else {
            figures::window_of(now - RECENT)
        };
        let rows = self.store.samples_since(since).await?;
        if full {
            cached.windows.clear();
            cached.full_read = Some(Instant::now());
        } else {
            cached.windows.retain(|(at, _), _| *at < since);
        }
        for row in rows {
            let window = serde_json::from_str(&row.figures).unwrap_or_default();
            cached.windows.insert((row.at, row.process_id), window);
        }
        cached.windows.retain(|(at, _), _| *at >= first);
        Ok(cached.windows.clone())
    }
}

/// The last minute (the six newest windows, the current one partly) and
/// every window summed over processes.
pub(super) fn last_minute(
    windows: &BTreeMap<(DateTime<Utc>, String), WindowFigures>,
    now: DateTime<Utc>,
) -> (WindowFigures, BTreeMap<DateTime<Utc>, WindowFigures>) {
    let minute_from = figures::window_of(now) - TimeDelta::seconds(5 * WINDOW_SECONDS);
    let mut minute = WindowFigures::default();
    let mut by_window: BTreeMap<DateTime<Utc>, WindowFigures> = BTreeMap::new();
    for ((at, _), window) in windows {
        if *at >= minute_from {
            minute.add(window);
        }
        by_window.entry(*at).or_default().add(window);
    }
    (minute, by_window)
}

/// One point per window from 15 minutes ago to now (empty windows count
/// zero), oldest first.
pub(super) fn series(
    by_window: &BTreeMap<DateTime<Utc>, WindowFigures>,
    now: DateTime<Utc>,
) -> Vec<SeriesPoint> {
    let last = figures::window_of(now);
    let mut at = figures::window_of(now - SERIES_SPAN);
    let mut points = Vec::new();
    let empty = WindowFigures::default();
    while at <= last {
        let window = by_window.get(&at).unwrap_or(&empty);
        // The current window is partial: per second over what has passed.
        let seconds = if at == last {
            ((now - at).num_milliseconds() as f64 / 1000.0).max(1.0)
        } else {
            WINDOW_SECONDS as f64
        };
        let times = window.times();
        points.push(SeriesPoint {
            at,
            done_per_second: window.done() as f64 / seconds,
            failed_per_second: window.failed() as f64 / seconds,
            p50_ms: quantile(&times, 0.5).map(|s| s * 1000.0),
            p99_ms: quantile(&times, 0.99).map(|s| s * 1000.0),
            deliveries_per_second: window.delivered as f64 / seconds,
        });
        at += TimeDelta::seconds(WINDOW_SECONDS);
    }
    points
}
