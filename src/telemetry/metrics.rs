//! Prometheus metrics: the names herald records (through the `metrics`
//! facade, so recording is cheap and works without an exporter) and the one
//! global recorder whose text `GET /metrics` serves.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const NOTIFICATIONS_CREATED: &str = "herald_notifications_created_total";
pub const NOTIFICATIONS_PUBLISHED: &str = "herald_notifications_published_total";
pub const NOTIFICATIONS_PUBLISH_FAILED: &str = "herald_notifications_publish_failed_total";
/// Labels: kind, outcome (`done`, `failed` per attempt; then `retried` or
/// `dead` for what the retry policy did with a failure).
pub const JOBS: &str = "herald_jobs_total";
pub const JOBS_SUBMITTED: &str = "herald_jobs_submitted_total";
/// Label: state (`queued`, `retrying`, `running`): ledger rows not finished.
pub const QUEUE_DEPTH: &str = "herald_queue_depth";
/// Label: kind.
pub const JOB_DURATION: &str = "herald_job_duration_seconds";
/// Label: scan.
pub const SCANS_RUN: &str = "herald_scans_run_total";
/// Label: outcome (`recorded` as a job; `refused`, `revoked` or `skipped`
/// with only a Celery result written).
pub const CELERY_MESSAGES: &str = "herald_celery_messages_total";
/// The ingress's loops connected to Celery's AMQP broker now.
pub const CELERY_BROKER_CONNECTED: &str = "herald_celery_broker_connected";
/// Connections to Celery's AMQP broker made again after one was lost.
pub const CELERY_BROKER_RECONNECTS: &str = "herald_celery_broker_reconnects_total";
/// Label: broker (`redis`, `amqp`). The ingress's loops (`celery.concurrency`)
/// while it runs; 0 once stopped.
pub const CELERY_BROKER_LOOPS: &str = "herald_celery_broker_loops";
/// Label: layer (`memory`, `redis`).
pub const LAYER_DROPPED: &str = "herald_layer_dropped_total";
/// Group copies a Redis layer held back because their queue was full.
pub const LAYER_HELD: &str = "herald_layer_held_total";
/// Held group copies given up at `layer.full_channel_deadline`.
pub const LAYER_UNDELIVERED: &str = "herald_layer_undelivered_total";
/// Label: layer (`redis`, `redis_pubsub`).
pub const LAYER_RECONNECTS: &str = "herald_layer_reconnects_total";
/// TCP connections closed at once: too many were open before becoming
/// WebSockets (`sidecar.max_pending_connections`).
pub const HTTP_REFUSED: &str = "herald_http_connections_refused_total";
/// Label: kind. Jobs this process holds now (fetched, waiting for their
/// batch, or running).
pub const JOBS_RUNNING: &str = "herald_jobs_running";
/// The sidecar's (its own recorder, see `sidecar::metrics`). Label: reason.
pub const SIDECAR_AUTH_FAILURES: &str = "herald_sidecar_auth_failures_total";
/// The sidecar's. Label: code (the close code sent or received).
pub const SIDECAR_CLOSES: &str = "herald_sidecar_closes_total";

/// The upper bounds (seconds) of `herald_job_duration_seconds`'s buckets;
/// the dashboard's run-time quantiles are read from them.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. When another
/// recorder was installed first (a test harness), this one renders nothing.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), &DURATION_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        NOTIFICATIONS_CREATED,
        "Notification rows created by jobs and scans"
    );
    describe_counter!(
        NOTIFICATIONS_PUBLISHED,
        "Notifications handed to the channel layer"
    );
    describe_counter!(
        NOTIFICATIONS_PUBLISH_FAILED,
        "Publish attempts that failed and stay in the outbox"
    );
    describe_counter!(JOBS, "Job attempts by kind and outcome");
    describe_counter!(JOBS_SUBMITTED, "Jobs submitted and queued");
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs not finished, by state");
    describe_histogram!(
        JOB_DURATION,
        metrics::Unit::Seconds,
        "Job run time, by kind"
    );
    describe_counter!(
        SCANS_RUN,
        "Scheduled scan periods this process claimed and ran"
    );
    describe_counter!(
        LAYER_DROPPED,
        "Group message copies dropped on full channels"
    );
    describe_counter!(LAYER_RECONNECTS, "Times a Redis layer reconnected");
    describe_counter!(
        LAYER_HELD,
        "Group message copies held back (and retried) because their queue was full"
    );
    describe_counter!(
        LAYER_UNDELIVERED,
        "Held group message copies given up at layer.full_channel_deadline"
    );
    describe_counter!(
        CELERY_MESSAGES,
        "Celery task messages taken from the broker, by what became of them"
    );
    metrics::describe_gauge!(JOBS_RUNNING, "Jobs this process holds now, by kind");
    metrics::describe_gauge!(
        CELERY_BROKER_CONNECTED,
        "Celery ingress loops connected to the AMQP broker now"
    );
    metrics::describe_gauge!(
        CELERY_BROKER_LOOPS,
        "Celery ingress loops this process runs, by broker kind"
    );
    describe_counter!(
        CELERY_BROKER_RECONNECTS,
        "Connections to Celery's AMQP broker made again after one was lost"
    );
}

/// One sample line of Prometheus text: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The samples of a Prometheus text rendering, read back: how the
/// dashboard's per-process figures come from the same counters `/metrics`
/// shows (the exporter has no other read access).
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// Reads every sample line of `text`; comments and lines that do not
    /// parse are skipped.
    pub fn parse(text: &str) -> Samples {
        Samples(text.lines().filter_map(parse_line).collect())
    }

    /// The samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |sample| sample.name == name)
    }

    /// The value of the sample named `name` whose labels include all of
    /// `labels`, summed over the matches (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.named(name)
            .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }

    /// Adds the samples of another rendering.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_string(), value));
            inner = &after[end + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_reads_back() {
        let text = "# HELP x y\n# TYPE x counter\nx 3\n\
            herald_jobs_total{kind=\"notify\",outcome=\"done\"} 12\n\
            h_bucket{kind=\"a\",le=\"+Inf\"} 4\n\
            odd{v=\"a\\\"b,c\"} 1.5\nbroken{x=1} 2\nempty{} 7\n";
        let samples = Samples::parse(text);
        assert_eq!(samples.value("x", &[]), 3.0);
        assert_eq!(
            samples.value(
                "herald_jobs_total",
                &[("kind", "notify"), ("outcome", "done")]
            ),
            12.0
        );
        assert_eq!(
            samples.value("herald_jobs_total", &[("kind", "other")]),
            0.0
        );
        assert_eq!(
            samples.named("h_bucket").next().unwrap().label("le"),
            Some("+Inf")
        );
        assert_eq!(
            samples.named("odd").next().unwrap().label("v"),
            Some("a\"b,c")
        );
        assert_eq!(samples.value("odd", &[]), 1.5);
        assert_eq!(samples.named("broken").count(), 0);
        assert_eq!(samples.value("empty", &[]), 7.0);
    }
}
