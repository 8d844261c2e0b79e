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
/// Label: layer (`memory`, `redis`).
pub const LAYER_DROPPED: &str = "herald_layer_dropped_total";
/// Label: layer (`redis`, `redis_pubsub`).
pub const LAYER_RECONNECTS: &str = "herald_layer_reconnects_total";
/// TCP connections closed at once: too many were open before becoming
/// WebSockets (`sidecar.max_pending_connections`).
pub const HTTP_REFUSED: &str = "herald_http_connections_refused_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. When another
/// recorder was installed first (a test harness), this one renders nothing.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(JOB_DURATION.into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ],
            )
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
        CELERY_MESSAGES,
        "Celery task messages taken from the broker, by what became of them"
    );
}
