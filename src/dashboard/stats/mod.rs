//! The fleet's figures (`GET /api/stats`, and the page's event stream),
//! read from the database and Redis, never from the serving process's own
//! counters: the job ledger (open jobs per kind, dead jobs), the heartbeat
//! rows every process writes (processes, jobs running, delivery) and their
//! 10-second sample windows (throughput, run times, done in the last
//! minute), the scan claims, the outbox, a `PING` to each Redis shard, and
//! Celery's broker when the ingress is on (its queues read by a probe).
//!
//! A [`Collector`] reads at most once per `dashboard.refresh_interval`,
//! whatever number of pages and API callers ask. Each source of figures
//! has its file: `ledger`, `processes`, `samples`, `scans`, `layer`,
//! `broker`.

mod broker;
mod layer;
mod ledger;
mod processes;
mod samples;
mod scans;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::Mutex;
use utoipa::ToSchema;

pub use broker::{BrokerStats, RevokedTask};
pub use layer::{Layer, Outbox, Shard, redact};
pub use ledger::{DEAD_LIMIT, DeadJob, KindStats, Totals};
pub use processes::{Delivery, DeliveryProcess, Process};
pub use samples::{SERIES_SPAN, SeriesPoint};
pub use scans::ScanStats;

use crate::config::Settings;
use crate::fleet::figures::WindowFigures;
use crate::ingress::broker::probe::BrokerProbe;
use crate::jobs::schedule::{Schedule, schedules};
use crate::store::{JobState, OpenCount, Store, StoreError};
use layer::ShardProbe;

/// Everything the dashboard shows, for the whole fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    /// When these figures were read.
    pub at: DateTime<Utc>,
    /// When the jobs waiting, scheduled, retrying and dead were counted in
    /// the ledger: each second, unless counting took long enough (a large
    /// backlog) that counting each second would cost the database more
    /// than 1% of its time; then as often as that allows.
    pub counted_at: DateTime<Utc>,
    /// Per job kind.
    pub kinds: Vec<KindStats>,
    /// Every kind together.
    pub totals: Totals,
    /// Throughput and run time over the last 15 minutes, one point per
    /// 10-second window, oldest first.
    pub series: Vec<SeriesPoint>,
    /// The most recently failed dead jobs (at most 20).
    pub dead: Vec<DeadJob>,
    pub scans: Vec<ScanStats>,
    pub delivery: Delivery,
    pub layer: Layer,
    /// Celery's broker, when the ingress is on (`celery.queues`).
    pub broker: Option<BrokerStats>,
    /// Live processes (heartbeat within `dashboard.process_timeout`).
    pub processes: Vec<Process>,
    /// What could not be read this time (for example `database: unavailable`).
    pub problems: Vec<String>,
}

/// How many reads of the fleet a collector made, and their time together;
/// the same for the ledger counts among them (for the bench that measures
/// the dashboard's cost).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadCost {
    pub reads: u64,
    pub total: Duration,
    pub counts: u64,
    pub counting: Duration,
}

/// Reads the fleet's figures, at most once per refresh interval.
pub struct Collector {
    cost: std::sync::Mutex<ReadCost>,
    store: Store,
    settings: Arc<Settings>,
    schedules: Vec<Schedule>,
    shards: Vec<ShardProbe>,
    broker: Option<broker::Probe>,
    state: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    latest: Option<(Instant, Arc<Stats>, Arc<str>)>,
    /// The last ledger counts: when read (and at what time), how long the
    /// read took.
    counts: Option<(Instant, DateTime<Utc>, Duration, Vec<OpenCount>)>,
    /// Sample windows read before, by (window, process).
    windows: BTreeMap<(DateTime<Utc>, String), WindowFigures>,
    /// When every window was last read afresh.
    full_read: Option<Instant>,
}

impl Collector {
    pub fn new(store: Store, settings: Arc<Settings>) -> Collector {
        Collector {
            cost: std::sync::Mutex::default(),
            schedules: schedules(&settings.worker).unwrap_or_default(),
            shards: ShardProbe::of_layer(&settings),
            broker: BrokerProbe::new(&settings.celery).map(broker::Probe::new),
            store,
            settings,
            state: Mutex::new(Cached::default()),
        }
    }

    /// The figures, read now unless read within the refresh interval; also
    /// as JSON.
    pub async fn latest(&self) -> (Arc<Stats>, Arc<str>) {
        let mut cached = self.state.lock().await;
        let refresh = self.settings.dashboard.refresh_interval;
        if let Some((at, stats, json)) = &cached.latest
            && at.elapsed() < refresh.mul_f64(0.9)
        {
            return (stats.clone(), json.clone());
        }
        let started = Instant::now();
        let stats = Arc::new(self.read(&mut cached).await);
        if let Ok(mut cost) = self.cost.lock() {
            cost.reads += 1;
            cost.total += started.elapsed();
        }
        let json: Arc<str> = serde_json::to_string(&*stats).unwrap_or_default().into();
        cached.latest = Some((Instant::now(), stats.clone(), json.clone()));
        (stats, json)
    }

    /// Every source at once, then the figures made of them.
    async fn read(&self, cached: &mut Cached) -> Stats {
        let now = crate::store::now();
        let mut problems = Problems::default();
        let timeout = TimeDelta::from_std(self.settings.dashboard.process_timeout)
            .unwrap_or(TimeDelta::seconds(10));
        let store = &self.store;
        let due = self.count_due(cached);
        let (counts, paused, processes, dead, backlog, shards, windows, scan_runs, broker) = tokio::join!(
            self.count_if(due, now),
            store.paused_kinds(),
            store.live_processes(now - timeout),
            store.jobs_in_state(JobState::Dead, DEAD_LIMIT),
            store.outbox_backlog(),
            self.ping_shards(),
            self.windows(cached, now),
            self.scan_runs(),
            self.read_broker(),
        );
        let (counted_at, counts) = self.counts(cached, counts, now, &mut problems);
        let paused: BTreeSet<String> = problems
            .or_default("paused kinds", paused)
            .into_iter()
            .collect();
        let processes = problems.or_default("processes", processes);
        let dead = problems.or_default("dead jobs", dead);
        let backlog = problems.or_default("outbox", backlog);
        let windows = problems.or_default("samples", windows);
        let scans = self.scan_stats(scan_runs, &paused, now, &mut problems);
        let figures = processes::with_figures(&processes);
        let (minute, by_window) = samples::last_minute(&windows, now);
        let running = processes::running_by_kind(&figures);
        let (kinds, totals) = ledger::kind_stats(&counts, &running, &paused, &minute);
        let broker = broker.map(|read| {
            let (stats, problem) = read.stats(&figures);
            problems.0.extend(problem);
            stats
        });
        let (delivery, processes) = processes::delivery_and_processes(&figures);
        Stats {
            at: now,
            counted_at,
            kinds,
            totals,
            series: samples::series(&by_window, now),
            dead: dead.into_iter().map(DeadJob::from).collect(),
            scans,
            delivery,
            layer: self.layer(shards, &backlog, now),
            broker,
            processes,
            problems: problems.0.into_iter().collect(),
        }
    }

    /// Celery's broker, when the ingress is on.
    async fn read_broker(&self) -> Option<broker::Read> {
        match &self.broker {
            Some(probe) => Some(probe.read(&self.store).await),
            None => None,
        }
    }

    /// The reads so far.
    pub fn cost(&self) -> ReadCost {
        self.cost.lock().map(|cost| *cost).unwrap_or_default()
    }
}

/// What could not be read, one line each: the page shows them.
#[derive(Default)]
struct Problems(BTreeSet<String>);

impl Problems {
    fn note(&mut self, what: &str, error: StoreError) {
        tracing::debug!(%error, what, "dashboard: could not read");
        self.0.insert(format!("{what}: unavailable"));
    }

    /// The value read, or its default with the failure noted.
    fn or_default<T: Default>(&mut self, what: &str, read: Result<T, StoreError>) -> T {
        read.map_err(|e| self.note(what, e)).unwrap_or_default()
    }
}
