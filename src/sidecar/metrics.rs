//! The sidecar's counters: connections, authentication failures by reason,
//! events delivered and dropped, slow-client disconnects, replayed
//! notifications. Plain atomics, rendered in Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every connection of one sidecar.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Authenticated connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Authentication failures, by `AuthError::code`.
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections refused by `max_connections` or the per-user limit.
    pub connections_refused: AtomicU64,
    /// Events written to the client's queue (notifications, chat, typing).
    pub events_delivered: AtomicU64,
    /// Layer events of a type the sidecar does not know.
    pub events_dropped_unknown: AtomicU64,
    /// Notifications dropped because the connection had already sent them.
    pub events_dropped_duplicate: AtomicU64,
    /// Clients closed with 4008.
    pub slow_client_disconnects: AtomicU64,
    /// Clients dropped for not answering pings.
    pub ping_timeouts: AtomicU64,
    /// Connections closed because their token expired.
    pub token_expiries: AtomicU64,
    /// Notifications sent from the database on resume.
    pub notifications_replayed: AtomicU64,
    /// Replays the sidecar started itself: the layer may have lost messages.
    pub resyncs: AtomicU64,
    /// Inbound messages over the size limit.
    pub oversized_messages: AtomicU64,
}

/// A read of every counter at one moment, for tests and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub auth_failures: BTreeMap<&'static str, u64>,
    pub connections_refused: u64,
    pub events_delivered: u64,
    pub events_dropped_unknown: u64,
    pub events_dropped_duplicate: u64,
    pub slow_client_disconnects: u64,
    pub ping_timeouts: u64,
    pub token_expiries: u64,
    pub notifications_replayed: u64,
    pub resyncs: u64,
    pub oversized_messages: u64,
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn auth_failure(&self, code: &'static str) {
        let mut map = self
            .auth_failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *map.entry(code).or_default() += 1;
    }

    pub(crate) fn snapshot(&self, connections_open: u64) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connections_open,
            connections_accepted: get(&self.connections_accepted),
            auth_failures: self
                .auth_failures
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
            connections_refused: get(&self.connections_refused),
            events_delivered: get(&self.events_delivered),
            events_dropped_unknown: get(&self.events_dropped_unknown),
            events_dropped_duplicate: get(&self.events_dropped_duplicate),
            slow_client_disconnects: get(&self.slow_client_disconnects),
            ping_timeouts: get(&self.ping_timeouts),
            token_expiries: get(&self.token_expiries),
            notifications_replayed: get(&self.notifications_replayed),
            resyncs: get(&self.resyncs),
            oversized_messages: get(&self.oversized_messages),
        }
    }
}

impl Snapshot {
    /// Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP herald_sidecar_{name} {help}");
            let _ = writeln!(out, "# TYPE herald_sidecar_{name} {kind}");
            let _ = writeln!(out, "herald_sidecar_{name} {value}");
        };
        metric(
            "connections_open",
            "gauge",
            "Open WebSocket connections.",
            self.connections_open,
        );
        metric(
            "connections_accepted_total",
            "counter",
            "Authenticated connections accepted.",
            self.connections_accepted,
        );
        metric(
            "connections_refused_total",
            "counter",
            "Connections refused by a connection limit.",
            self.connections_refused,
        );
        metric(
            "events_delivered_total",
            "counter",
            "Events queued to clients.",
            self.events_delivered,
        );
        metric(
            "events_dropped_unknown_total",
            "counter",
            "Layer events of an unknown type, dropped.",
            self.events_dropped_unknown,
        );
        metric(
            "events_dropped_duplicate_total",
            "counter",
            "Notifications already sent on the connection, dropped.",
            self.events_dropped_duplicate,
        );
        metric(
            "slow_client_disconnects_total",
            "counter",
            "Clients closed with 4008.",
            self.slow_client_disconnects,
        );
        metric(
            "ping_timeouts_total",
            "counter",
            "Clients dropped for not answering pings.",
            self.ping_timeouts,
        );
        metric(
            "token_expiries_total",
            "counter",
            "Connections closed at token expiry.",
            self.token_expiries,
        );
        metric(
            "notifications_replayed_total",
            "counter",
            "Notifications sent from the database on resume.",
            self.notifications_replayed,
        );
        metric(
            "resyncs_total",
            "counter",
            "Replays started by the sidecar: the layer may have lost messages.",
            self.resyncs,
        );
        metric(
            "oversized_messages_total",
            "counter",
            "Inbound messages over the size limit.",
            self.oversized_messages,
        );
        let _ = writeln!(
            out,
            "# HELP herald_sidecar_auth_failures_total Authentication failures by reason."
        );
        let _ = writeln!(out, "# TYPE herald_sidecar_auth_failures_total counter");
        for (reason, count) in &self.auth_failures {
            let _ = writeln!(
                out,
                "herald_sidecar_auth_failures_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out
    }
}
