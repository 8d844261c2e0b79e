//! The fleet's shared figures: every herald process (`run`, `worker`,
//! `sidecar`) writes a heartbeat to the database once a second
//! ([`Heartbeat`]): its role, version and start, what it holds now (jobs
//! running per kind, connections, users online, close codes), and what it
//! counted in the current 10-second window (jobs done and failed per kind,
//! a run-time histogram, deliveries). Each figure is read from the process's
//! own Prometheus counters (`/metrics`), so the dashboard and Prometheus
//! count alike. The dashboard sums these rows over the fleet
//! ([`figures`]).

pub mod figures;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::DashboardSettings;
use crate::sidecar::SidecarState;
use crate::store::{Beat, Store};
use crate::telemetry::metrics::{self as m, Samples};
use figures::{Counted, DeliveryNow, ProcessFigures, WindowFigures};

/// How long rows of silent processes and old samples are kept.
pub const KEEP: TimeDelta = TimeDelta::hours(1);

/// Which role a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `herald run`: worker and sidecar in one process.
    Run,
    Worker,
    Sidecar,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Worker => "worker",
            Role::Sidecar => "sidecar",
        }
    }
}

/// A started heartbeat; [`Heartbeat::stop`] marks the process stopped.
pub struct Heartbeat {
    id: String,
    store: Store,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Starts writing this process's heartbeat every
    /// `dashboard.heartbeat_interval`; `sidecar` gives the delivery figures
    /// of a process that serves WebSockets.
    pub fn start(
        store: Store,
        role: Role,
        settings: &DashboardSettings,
        sidecar: Option<SidecarState>,
    ) -> Heartbeat {
        let id = process_id(role);
        let stop = CancellationToken::new();
        let beat = Beating {
            id: id.clone(),
            role,
            host: host_name(),
            started_at: crate::store::now(),
            sidecar,
            previous: Counted::default(),
            window: None,
            rates: VecDeque::new(),
            beats: 0,
            warned: None,
        };
        let task = tokio::spawn(beat.run(store.clone(), settings.heartbeat_interval, stop.clone()));
        Heartbeat {
            id,
            store,
            stop,
            task,
        }
    }

    /// This process's id in the fleet.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops beating and marks the process stopped, so the dashboard drops
    /// it at once (a killed process drops out after
    /// `dashboard.process_timeout`).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Err(error) = self.store.process_stopped(&self.id).await {
            tracing::debug!(%error, "could not mark this process stopped");
        }
    }
}

/// `<role>-<host>-<pid>-<random>`: unique per process start.
fn process_id(role: Role) -> String {
    let suffix = &ulid::Ulid::generate().to_string()[20..];
    format!(
        "{}-{}-{}-{suffix}",
        role.as_str(),
        host_name(),
        std::process::id()
    )
}

fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    if host.is_empty() {
        "host".into()
    } else {
        host.chars().take(100).collect()
    }
}

/// The heartbeat task's state.
struct Beating {
    id: String,
    role: Role,
    host: String,
    started_at: DateTime<Utc>,
    sidecar: Option<SidecarState>,
    /// The counters at the previous beat (deltas go to the window).
    previous: Counted,
    /// The current window and what was counted in it so far.
    window: Option<(DateTime<Utc>, WindowFigures)>,
    /// (when, jobs done, deliveries) of the last few beats, for rates.
    rates: VecDeque<(Instant, u64, u64)>,
    beats: u64,
    /// When a failed write was last logged.
    warned: Option<Instant>,
}

impl Beating {
    async fn run(mut self, store: Store, every: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            self.beat(&store).await;
        }
    }

    /// Reads the counters, and writes the process's row and window row.
    async fn beat(&mut self, store: &Store) {
        let mut samples = Samples::parse(&m::prometheus().render());
        let delivery = self.sidecar.as_ref().map(|sidecar| {
            samples.extend(Samples::parse(&sidecar.prometheus_text()));
            DeliveryNow {
                connections: sidecar.open_connections() as u64,
                users_online: sidecar.users_online() as u64,
            }
        });
        let counted = Counted::read(&samples);
        let delta = counted.since(&self.previous);
        self.previous = counted.clone();
        let now = crate::store::now();
        let window_start = figures::window_of(now);
        let window = match self.window.take() {
            Some((at, figures)) if at == window_start => figures,
            _ => WindowFigures::default(),
        };
        let window = window.plus(&delta);
        let instant = Instant::now();
        self.rates
            .push_back((instant, counted.jobs_done(), counted.delivered));
        while self.rates.len() > 6 {
            self.rates.pop_front();
        }
        let rate =
            |pick: fn(&(Instant, u64, u64)) -> u64| match (self.rates.front(), self.rates.back()) {
                (Some(first), Some(last)) if last.0 > first.0 => {
                    pick(last).saturating_sub(pick(first)) as f64 / (last.0 - first.0).as_secs_f64()
                }
                _ => 0.0,
            };
        let process = ProcessFigures {
            running: counted.running.clone(),
            jobs_done: counted.jobs_done(),
            jobs_failed: counted.jobs_failed(),
            jobs_per_second: rate(|r| r.1),
            delivery: delivery.map(|now| figures::DeliveryFigures {
                connections: now.connections,
                users_online: now.users_online,
                delivered: counted.delivered,
                deliveries_per_second: rate(|r| r.2),
                dropped: counted.dropped,
                closes: counted.closes.clone(),
            }),
            dropped: counted.dropped,
            held: counted.held,
            undelivered: counted.undelivered,
            ingress: figures::IngressFigures::read(&samples),
        };
        let figures = serde_json::to_string(&process).unwrap_or_default();
        let window_json = serde_json::to_string(&window).unwrap_or_default();
        let beat = Beat {
            id: &self.id,
            role: self.role.as_str(),
            host: &self.host,
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            figures: &figures,
            window: window_start,
            window_figures: &window_json,
        };
        let written = store.heartbeat(&beat).await;
        self.window = Some((window_start, window));
        self.beats += 1;
        if let Err(error) = written {
            // Once a minute: a sidecar on a database not yet migrated.
            if self
                .warned
                .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
            {
                tracing::warn!(%error, "could not write this process's heartbeat (run herald migrate?)");
                self.warned = Some(Instant::now());
            }
            return;
        }
        if self.beats % 60 == 1
            && let Err(error) = store.prune_fleet(now - KEEP).await
        {
            tracing::debug!(%error, "could not prune old heartbeats");
        }
    }
}
