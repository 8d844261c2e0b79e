//! `[celery]`: the Celery ingress's settings, named after Celery's own
//! where they mirror one (the broker and result backend, kombu's transport
//! options, the queue declarations RabbitMQ must see identical), and the
//! task routes (`[celery.tasks]`).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The Celery ingress (`crate::ingress`): Celery task messages taken from
/// a Redis or AMQP broker and run as herald jobs; off while `broker_url`
/// is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelerySettings {
    /// Celery's broker (`CELERY_BROKER_URL`); may hold a password.
    pub broker_url: SecretString,
    /// Celery's result backend (`CELERY_RESULT_BACKEND`); empty: no results.
    pub result_backend: SecretString,
    /// The queues herald consumes (the application routes its tasks there).
    pub queues: Vec<String>,
    /// Messages one take moves off the broker (one script, one ledger
    /// statement, one acknowledgement).
    pub batch_size: usize,
    /// Take-record-acknowledge loops running at once in one process.
    pub concurrency: usize,
    /// How often an idle loop looks at the queues again.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// kombu's `visibility_timeout`: another consumer's unacknowledged
    /// message older than this goes back to its queue.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// A message of `queues` left unacknowledged this long (its herald
    /// process died while recording it) goes back to its queue.
    #[serde(with = "humantime_serde")]
    pub restore_after: Duration,
    /// How long a revoke is honoured (Celery's worker keeps its revoked ids
    /// 3 hours, `REVOKE_EXPIRES`, and only in memory).
    #[serde(with = "humantime_serde")]
    pub revoke_expires: Duration,
    /// The node name herald answers Celery's remote control as
    /// (`celery inspect`, Flower); empty: `herald-<pid>@<hostname>`, so
    /// that two herald processes on one host are distinct nodes.
    pub hostname: String,
    /// Send Celery's task events from the start (Celery's
    /// `worker_send_task_events`, `-E`); else only after `enable_events`.
    pub send_task_events: bool,
    /// Write STARTED when a job starts (Celery's `task_track_started`).
    pub track_started: bool,
    /// On the rpc:// result backend: results survive a broker restart
    /// (Celery's `result_persistent`: delivery mode 2 instead of 1).
    pub result_persistent: bool,
    /// Lifetime of a result (Celery's `result_expires`); 0: no expiry.
    #[serde(with = "humantime_serde")]
    pub result_expires: Duration,
    /// kombu's `global_keyprefix` transport option, on every broker key.
    pub global_keyprefix: String,
    /// kombu's `priority_steps`: one list per step, lowest served first.
    pub priority_steps: Vec<u8>,
    /// On AMQP: Celery's `task_queue_max_priority`, the `x-max-priority`
    /// of herald's queues; 0: none (Celery's default).
    pub queue_max_priority: u8,
    /// On AMQP: Celery's `task_create_missing_queue_type`, `classic` or `quorum`.
    pub queue_type: String,
    /// On AMQP: Celery's `task_create_missing_queue_exchange_type`, the type
    /// of each queue's exchange: `direct` (Celery's default) or `topic`
    /// (then kombu's native delayed delivery is set up too).
    pub queue_exchange_type: String,
    /// On AMQP with a topic exchange: Celery's
    /// `broker_native_delayed_delivery_queue_type` (`quorum` or `classic`),
    /// the type of the delayed-delivery queues.
    pub delayed_delivery_queue_type: String,
    /// On AMQP: the `x-dead-letter-exchange` the application gives herald's
    /// queues (in `CELERY_TASK_QUEUES`' `queue_arguments`); empty: none.
    /// With one, a message no result can answer is rejected to it.
    pub queue_dead_letter_exchange: String,
    /// Task name -> the job kind it runs and how its arguments map.
    pub tasks: BTreeMap<String, CeleryTask>,
}

/// One `[celery.tasks]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeleryTask {
    /// The job kind the task runs.
    pub kind: String,
    /// Payload fields the positional arguments fill, in order; default:
    /// the kind's schema order.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Payload fields a call may leave out, with their values.
    #[serde(default)]
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

impl CelerySettings {
    /// Whether a broker is configured (the ingress runs).
    pub fn enabled(&self) -> bool {
        !self.broker_url.expose_secret().trim().is_empty()
    }

    /// Whether results are written (Celery's result backend is configured).
    pub fn results_enabled(&self) -> bool {
        !self.result_backend.expose_secret().trim().is_empty()
    }
}
