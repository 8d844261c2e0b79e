//! The sidecar's counters: connections, authentication failures by reason,
//! events delivered and dropped, slow-client disconnects, replayed
//! notifications, close codes. `metrics` crate counters in a Prometheus
//! recorder of the sidecar's own (so two sidecars in one process, as in
//! tests, count apart), rendered on `/metrics` beside the process-wide
//! recorder and read back from that same text for the dashboard's figures.

use std::collections::BTreeMap;

use metrics::{Counter, Gauge, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::telemetry::metrics::{self as m, Samples};

/// Where the sidecar's counters are registered from (the recorder ignores it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Counters shared by every connection of one sidecar.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    connections_open: Gauge,
    /// Authenticated connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections refused by `max_connections` or the per-user limit.
    pub connections_refused: Counter,
    /// Events written to the client's queue (notifications, chat, typing).
    pub events_delivered: Counter,
    /// Layer events of a type the sidecar does not know.
    pub events_dropped_unknown: Counter,
    /// Notifications dropped because the connection had already sent them.
    pub events_dropped_duplicate: Counter,
    /// Clients closed with 4008.
    pub slow_client_disconnects: Counter,
    /// Clients dropped for not answering pings.
    pub ping_timeouts: Counter,
    /// Connections closed because their token expired.
    pub token_expiries: Counter,
    /// Notifications sent from the database on resume.
    pub notifications_replayed: Counter,
    /// Replays the sidecar started itself: the layer may have lost messages.
    pub resyncs: Counter,
    /// Inbound messages over the size limit.
    pub oversized_messages: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A read of every counter at one moment, for tests and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub auth_failures: BTreeMap<String, u64>,
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
    /// Closed connections by close code (`"4008"`, ...; `"1005"` a client
    /// that gave none, `"1006"` a socket that broke).
    pub closes: BTreeMap<String, u64>,
}

pub(crate) fn inc(counter: &Counter) {
    counter.increment(1);
}

/// The counters: (field, metric name after `herald_sidecar_`, help).
const COUNTERS: [(&str, &str); 11] = [
    (
        "connections_accepted_total",
        "Authenticated connections accepted.",
    ),
    (
        "connections_refused_total",
        "Connections refused by a connection limit.",
    ),
    ("events_delivered_total", "Events queued to clients."),
    (
        "events_dropped_unknown_total",
        "Layer events of an unknown type, dropped.",
    ),
    (
        "events_dropped_duplicate_total",
        "Notifications already sent on the connection, dropped.",
    ),
    ("slow_client_disconnects_total", "Clients closed with 4008."),
    (
        "ping_timeouts_total",
        "Clients dropped for not answering pings.",
    ),
    (
        "token_expiries_total",
        "Connections closed at token expiry.",
    ),
    (
        "notifications_replayed_total",
        "Notifications sent from the database on resume.",
    ),
    (
        "resyncs_total",
        "Replays started by the sidecar: the layer may have lost messages.",
    ),
    (
        "oversized_messages_total",
        "Inbound messages over the size limit.",
    ),
];

fn full_name(short: &str) -> String {
    format!("herald_sidecar_{short}")
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counter = |short: &str| {
            let (_, help) = COUNTERS
                .iter()
                .find(|(name, _)| *name == short)
                .copied()
                .unwrap_or((short, ""));
            let name = full_name(short);
            recorder.describe_counter(
                KeyName::from(name.clone()),
                None,
                SharedString::from(help.to_string()),
            );
            recorder.register_counter(&Key::from_name(name), &METADATA)
        };
        let open = full_name("connections_open");
        recorder.describe_gauge(
            KeyName::from(open.clone()),
            None,
            SharedString::const_str("Open WebSocket connections."),
        );
        recorder.describe_counter(
            KeyName::from_const_str(m::SIDECAR_AUTH_FAILURES),
            None,
            SharedString::const_str("Authentication failures by reason."),
        );
        recorder.describe_counter(
            KeyName::from_const_str(m::SIDECAR_CLOSES),
            None,
            SharedString::const_str("Connections closed, by close code."),
        );
        let connections_open = recorder.register_gauge(&Key::from_name(open), &METADATA);
        Metrics {
            connections_open,
            connections_accepted: counter("connections_accepted_total"),
            connections_refused: counter("connections_refused_total"),
            events_delivered: counter("events_delivered_total"),
            events_dropped_unknown: counter("events_dropped_unknown_total"),
            events_dropped_duplicate: counter("events_dropped_duplicate_total"),
            slow_client_disconnects: counter("slow_client_disconnects_total"),
            ping_timeouts: counter("ping_timeouts_total"),
            token_expiries: counter("token_expiries_total"),
            notifications_replayed: counter("notifications_replayed_total"),
            resyncs: counter("resyncs_total"),
            oversized_messages: counter("oversized_messages_total"),
            recorder,
            handle,
        }
    }
}

impl Metrics {
    fn labelled(&self, name: &'static str, label: &'static str, value: String) -> Counter {
        let key = Key::from_parts(name, vec![Label::new(label, value)]);
        self.recorder.register_counter(&key, &METADATA)
    }

    pub(crate) fn auth_failure(&self, code: &'static str) {
        let key = Key::from_parts(m::SIDECAR_AUTH_FAILURES, vec![Label::new("reason", code)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// A connection closed with `code` (sent by the server, or the client's).
    pub(crate) fn closed(&self, code: u16) {
        self.labelled(m::SIDECAR_CLOSES, "code", code.to_string())
            .increment(1);
    }

    /// The Prometheus text of these counters, with `connections_open` now.
    pub fn render(&self, connections_open: u64) -> String {
        self.connections_open.set(connections_open as f64);
        self.handle.render()
    }

    pub(crate) fn snapshot(&self, connections_open: u64) -> Snapshot {
        let samples = Samples::parse(&self.render(connections_open));
        let get = |short: &str| samples.value(&full_name(short), &[]) as u64;
        let by_label = |name: &str, label: &str| -> BTreeMap<String, u64> {
            samples
                .named(name)
                .filter_map(|s| Some((s.label(label)?.to_string(), s.value as u64)))
                .collect()
        };
        Snapshot {
            connections_open: get("connections_open"),
            connections_accepted: get("connections_accepted_total"),
            auth_failures: by_label(m::SIDECAR_AUTH_FAILURES, "reason"),
            connections_refused: get("connections_refused_total"),
            events_delivered: get("events_delivered_total"),
            events_dropped_unknown: get("events_dropped_unknown_total"),
            events_dropped_duplicate: get("events_dropped_duplicate_total"),
            slow_client_disconnects: get("slow_client_disconnects_total"),
            ping_timeouts: get("ping_timeouts_total"),
            token_expiries: get("token_expiries_total"),
            notifications_replayed: get("notifications_replayed_total"),
            resyncs: get("resyncs_total"),
            oversized_messages: get("oversized_messages_total"),
            closes: by_label(m::SIDECAR_CLOSES, "code"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text_and_read_back() {
        let metrics = Metrics::default();
        inc(&metrics.events_delivered);
        metrics.notifications_replayed.increment(3);
        metrics.auth_failure("expired");
        metrics.auth_failure("expired");
        metrics.closed(4008);
        let text = metrics.render(2);
        for line in [
            "herald_sidecar_connections_open 2",
            "herald_sidecar_events_delivered_total 1",
            "herald_sidecar_notifications_replayed_total 3",
            "herald_sidecar_slow_client_disconnects_total 0",
            "herald_sidecar_auth_failures_total{reason=\"expired\"} 2",
            "herald_sidecar_closes_total{code=\"4008\"} 1",
            "# TYPE herald_sidecar_events_delivered_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let snapshot = metrics.snapshot(2);
        assert_eq!(snapshot.connections_open, 2);
        assert_eq!(snapshot.events_delivered, 1);
        assert_eq!(snapshot.notifications_replayed, 3);
        assert_eq!(snapshot.auth_failures.get("expired"), Some(&2));
        assert_eq!(snapshot.closes.get("4008"), Some(&1));
    }
}
