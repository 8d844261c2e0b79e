//! The fleet's figures (`GET /api/stats`, and the page's event stream),
//! read from the database and Redis, never from the serving process's own
//! counters: the job ledger (open jobs per kind, dead jobs), the heartbeat
//! rows every process writes (processes, jobs running, delivery) and their
//! 10-second sample windows (throughput, run times, done in the last
//! minute), the scan claims, the outbox, and a `PING` to each Redis shard.
//!
//! A [`Collector`] reads at most once per `dashboard.refresh_interval`,
//! whatever number of pages and API callers ask.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::Mutex;
use utoipa::ToSchema;

use crate::config::{LayerBackend, Settings};
use crate::fleet::figures::{self, ProcessFigures, WINDOW_SECONDS, WindowFigures, quantile};
use crate::jobs::KINDS;
use crate::jobs::schedule::{Schedule, schedules};
use crate::store::{JobRecord, JobState, OpenCount, OutboxBacklog, Store, StoreError};

/// How far back the charts go.
pub const SERIES_SPAN: TimeDelta = TimeDelta::minutes(15);

/// Dead jobs listed at most.
pub const DEAD_LIMIT: i64 = 20;

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
    /// Live processes (heartbeat within `dashboard.process_timeout`).
    pub processes: Vec<Process>,
    /// What could not be read this time (for example `database: unavailable`).
    pub problems: Vec<String>,
}

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

/// WebSocket delivery over every sidecar process.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Delivery {
    pub connections: u64,
    /// Summed over processes (a user connected to two counts twice).
    pub users_online: u64,
    pub deliveries_per_second: f64,
    /// Channel-layer copies dropped (full queues), every process, since
    /// each started.
    pub copies_dropped: u64,
    /// Connections closed, by close code, since each process started.
    pub closes: BTreeMap<String, u64>,
    pub processes: Vec<DeliveryProcess>,
}

/// One sidecar process's delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryProcess {
    pub id: String,
    pub connections: u64,
    pub users_online: u64,
    pub deliveries_per_second: f64,
    pub delivered: u64,
    pub copies_dropped: u64,
    pub closes: BTreeMap<String, u64>,
}

/// The channel layer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Layer {
    /// `memory`, `redis` or `redis_pubsub`.
    pub backend: String,
    pub shards: Vec<Shard>,
    pub outbox: Outbox,
}

/// One Redis host of the layer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shard {
    /// host:port (credentials left out).
    pub host: String,
    pub up: bool,
    /// `PING` round trip.
    pub rtt_ms: Option<f64>,
}

/// Notifications committed and not yet published.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Outbox {
    pub entries: i64,
    pub notifications: i64,
    /// How long the oldest entry's next attempt is overdue (0 when due
    /// later).
    pub oldest_overdue_seconds: f64,
}

/// A live herald process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Process {
    pub id: String,
    /// `run`, `worker` or `sidecar`.
    pub role: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub seen_at: DateTime<Utc>,
    pub running: u64,
    pub jobs_per_second: f64,
    /// Open WebSockets (sidecars).
    pub connections: Option<u64>,
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

/// The share of the time the ledger counts may take: they are read again
/// once `took / COUNT_SHARE` has passed (and at most once per refresh).
const COUNT_SHARE: f64 = 0.01;

/// Reads the fleet's figures, at most once per refresh interval.
pub struct Collector {
    cost: std::sync::Mutex<ReadCost>,
    store: Store,
    settings: Arc<Settings>,
    schedules: Vec<Schedule>,
    shards: Vec<ShardProbe>,
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

/// A Redis host of the layer and a connection to ping it on.
struct ShardProbe {
    host: String,
    client: Option<redis::Client>,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// How long a shard may take to answer `PING`.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Windows younger than this are read again each time (their processes are
/// still adding to them); older ones come from the cache, all read afresh
/// once a minute.
const RECENT: TimeDelta = TimeDelta::seconds(30);

impl Collector {
    pub fn new(store: Store, settings: Arc<Settings>) -> Collector {
        let shards = match settings.layer.backend {
            LayerBackend::Memory => Vec::new(),
            _ => settings
                .layer
                .hosts
                .iter()
                .map(|url| ShardProbe {
                    host: redact(url),
                    client: redis::Client::open(url.as_str()).ok(),
                    conn: Mutex::new(None),
                })
                .collect(),
        };
        Collector {
            cost: std::sync::Mutex::default(),
            schedules: schedules(&settings.worker).unwrap_or_default(),
            store,
            settings,
            shards,
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

    async fn read(&self, cached: &mut Cached) -> Stats {
        let now = crate::store::now();
        let mut problems = Problems::default();
        let timeout = TimeDelta::from_std(self.settings.dashboard.process_timeout)
            .unwrap_or(TimeDelta::seconds(10));
        let store = &self.store;
        let scan_runs = async {
            let mut runs = Vec::new();
            for schedule in &self.schedules {
                runs.push(store.last_scan_run(schedule.name).await);
            }
            runs
        };
        let due = self.count_due(cached);
        let (counts, paused, processes, dead, backlog, shards, windows, scan_runs) = tokio::join!(
            self.count_if(due, now),
            store.paused_kinds(),
            store.live_processes(now - timeout),
            store.jobs_in_state(JobState::Dead, DEAD_LIMIT),
            store.outbox_backlog(),
            self.ping_shards(),
            self.windows(cached, now),
            scan_runs,
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
        let figures: Vec<(&crate::store::ProcessRow, ProcessFigures)> = processes
            .iter()
            .map(|row| (row, serde_json::from_str(&row.figures).unwrap_or_default()))
            .collect();
        let (minute, by_window) = last_minute(&windows, now);
        let (kinds, totals) = kind_stats(&counts, &running_by_kind(&figures), &paused, &minute);
        let (delivery, processes) = delivery_and_processes(&figures);
        Stats {
            at: now,
            counted_at,
            kinds,
            totals,
            series: series(&by_window, now),
            dead: dead.into_iter().map(DeadJob::from).collect(),
            scans,
            delivery,
            layer: self.layer(shards, &backlog, now),
            processes,
            problems: problems.0.into_iter().collect(),
        }
    }

    /// Whether the open jobs are counted afresh: the last count is older
    /// than the refresh interval (or than its own cost allows).
    fn count_due(&self, cached: &Cached) -> bool {
        let refresh = self.settings.dashboard.refresh_interval.mul_f64(0.9);
        cached
            .counts
            .as_ref()
            .is_none_or(|(at, _, took, _)| at.elapsed() >= refresh.max(took.div_f64(COUNT_SHARE)))
    }

    /// Counts the open jobs when `due`, and how long it took; `None` keeps
    /// the cached count.
    async fn count_if(
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
    fn counts(
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

    /// Each scheduled scan: its cron, last run and next run.
    fn scan_stats(
        &self,
        runs: Vec<Result<Option<crate::store::ScanRun>, StoreError>>,
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

    /// The channel layer's shards and the outbox's backlog.
    fn layer(&self, shards: Vec<Shard>, backlog: &OutboxBacklog, now: DateTime<Utc>) -> Layer {
        let oldest_overdue_seconds = backlog
            .oldest
            .map(|at| ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0);
        let backend = match self.settings.layer.backend {
            LayerBackend::Memory => "memory",
            LayerBackend::Redis => "redis",
            LayerBackend::RedisPubsub => "redis_pubsub",
        };
        Layer {
            backend: backend.into(),
            shards,
            outbox: Outbox {
                entries: backlog.entries,
                notifications: backlog.notifications,
                oldest_overdue_seconds,
            },
        }
    }

    /// The sample windows of the last 15 minutes, by (window, process):
    /// the recent ones read now, older ones from the cache (all read
    /// afresh once a minute).
    async fn windows(
        &self,
        cached: &mut Cached,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<(DateTime<Utc>, String), WindowFigures>, crate::store::StoreError> {
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

    /// The reads so far.
    pub fn cost(&self) -> ReadCost {
        self.cost.lock().map(|cost| *cost).unwrap_or_default()
    }

    /// `PING`s every shard at once, each on a connection kept for the next
    /// time (dropped when it fails).
    async fn ping_shards(&self) -> Vec<Shard> {
        let pings = self.shards.iter().map(|probe| async move {
            let started = Instant::now();
            let answered = tokio::time::timeout(PING_TIMEOUT, probe.ping()).await;
            let up = matches!(answered, Ok(Ok(())));
            if !up {
                *probe.conn.lock().await = None;
            }
            Shard {
                host: probe.host.clone(),
                up,
                rtt_ms: up.then(|| started.elapsed().as_secs_f64() * 1000.0),
            }
        });
        futures_util::future::join_all(pings).await
    }
}

impl ShardProbe {
    async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let Some(client) = &self.client else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad URL",
                )));
            };
            *conn = Some(client.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = conn.as_mut() else {
            return Ok(());
        };
        redis::cmd("PING")
            .query_async::<String>(conn)
            .await
            .map(|_| ())
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

/// Jobs running now per kind, summed over the processes' figures.
fn running_by_kind<'a>(
    figures: &[(&crate::store::ProcessRow, ProcessFigures)],
) -> BTreeMap<&'a str, i64> {
    let mut running: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, process) in figures {
        for (kind, count) in &process.running {
            if let Some(kind) = KINDS.iter().find(|k| *k == kind) {
                *running.entry(kind).or_default() += *count as i64;
            }
        }
    }
    running
}

/// The last minute (the six newest windows, the current one partly) and
/// every window summed over processes.
fn last_minute(
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

/// Per kind: waiting, scheduled, running, retrying, dead, and the last
/// minute's ends; and their totals.
fn kind_stats(
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

/// The delivery side summed over sidecars, and every live process.
fn delivery_and_processes(
    figures: &[(&crate::store::ProcessRow, ProcessFigures)],
) -> (Delivery, Vec<Process>) {
    let mut delivery = Delivery::default();
    let mut processes = Vec::new();
    for (row, process) in figures {
        delivery.copies_dropped += process.dropped;
        if let Some(sidecar) = &process.delivery {
            delivery.connections += sidecar.connections;
            delivery.users_online += sidecar.users_online;
            delivery.deliveries_per_second += sidecar.deliveries_per_second;
            for (code, count) in &sidecar.closes {
                *delivery.closes.entry(code.clone()).or_default() += count;
            }
            delivery.processes.push(DeliveryProcess {
                id: row.id.clone(),
                connections: sidecar.connections,
                users_online: sidecar.users_online,
                deliveries_per_second: sidecar.deliveries_per_second,
                delivered: sidecar.delivered,
                copies_dropped: process.dropped,
                closes: sidecar.closes.clone(),
            });
        }
        processes.push(Process {
            id: row.id.clone(),
            role: row.role.clone(),
            host: row.host.clone(),
            pid: row.pid,
            version: row.version.clone(),
            started_at: row.started_at,
            seen_at: row.seen_at,
            running: process.running.values().sum(),
            jobs_per_second: process.jobs_per_second,
            connections: process.delivery.as_ref().map(|d| d.connections),
        });
    }
    (delivery, processes)
}

/// One point per window from 15 minutes ago to now (empty windows count
/// zero), oldest first.
fn series(
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

/// `redis://user:password@host:6379/0` as `host:6379/0`.
pub fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    rest.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hosts_leave_out_credentials() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redact("redis://:secret@cache:6380/2"), "cache:6380/2");
        assert_eq!(redact("rediss://user:p@ss@h:1"), "h:1");
    }
}
