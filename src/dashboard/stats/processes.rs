//! The figures the heartbeat rows give: every live process, the jobs each
//! runs per kind, and WebSocket delivery summed over the sidecars, as each
//! process last wrote them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::fleet::figures::ProcessFigures;
use crate::jobs::KINDS;
use crate::store::ProcessRow;

/// WebSocket delivery over every sidecar process.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Delivery {
    pub connections: u64,
    /// Summed over processes (a user connected to two counts twice).
    pub users_online: u64,
    pub deliveries_per_second: f64,
    /// Channel-layer copies dropped (full queues), every process, since
    /// each started; held copies given up at the deadline among them.
    pub copies_dropped: u64,
    /// Group copies herald's publishers held back for a full queue (and
    /// placed later, or gave up), every process, since each started.
    pub copies_held: u64,
    /// Held copies given up at `layer.full_channel_deadline`: what a gone
    /// or stuck consumer never got.
    pub copies_undelivered: u64,
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

/// Each heartbeat row with the figures it carries (unreadable ones as
/// none).
pub(super) fn with_figures(rows: &[ProcessRow]) -> Vec<(&ProcessRow, ProcessFigures)> {
    rows.iter()
        .map(|row| (row, serde_json::from_str(&row.figures).unwrap_or_default()))
        .collect()
}

/// Jobs running now per kind, summed over the processes' figures.
pub(super) fn running_by_kind<'a>(
    figures: &[(&ProcessRow, ProcessFigures)],
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

/// The delivery side summed over sidecars, and every live process.
pub(super) fn delivery_and_processes(
    figures: &[(&ProcessRow, ProcessFigures)],
) -> (Delivery, Vec<Process>) {
    let mut delivery = Delivery::default();
    let mut processes = Vec::new();
    for (row, process) in figures {
        delivery.copies_dropped += process.dropped;
        delivery.copies_held += process.held;
        delivery.copies_undelivered += process.undelivered;
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
