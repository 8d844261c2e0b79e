//! Celery's results, whatever backend keeps them: how a task ended in
//! Celery's terms ([`Outcome`]) and the meta a Celery worker stores for it
//! (`{status, result, traceback, children, date_done, task_id}`). One room
//! per backend: Redis (`redis`: a key and a channel per task) and rpc://
//! (`rpc`: a message to the caller's reply queue on the AMQP broker).

mod redis;
mod rpc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub use self::redis::{RedisResults, key};
pub use self::rpc::RpcResults;

use super::{Refused, TaskMessage};
use crate::jobs::JobOutcome;
use crate::store::StoreError;

/// Why results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("Redis result backend: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("rpc result backend: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rpc result backend: the broker did not confirm a result")]
    NotConfirmed,
    #[error("rpc result backend: {0}")]
    Store(#[from] StoreError),
}

/// The backend `celery.result_backend` names.
#[derive(Clone)]
pub enum ResultBackend {
    Redis(RedisResults),
    Rpc(RpcResults),
}

impl ResultBackend {
    /// Notes, before `messages` are recorded, what answering them later
    /// needs: on rpc://, each caller's reply queue.
    pub async fn remember(
        &self,
        messages: &[Result<TaskMessage, Refused>],
    ) -> Result<(), ResultError> {
        let ResultBackend::Rpc(rpc) = self else {
            return Ok(());
        };
        let replies: Vec<(String, String)> = messages
            .iter()
            .filter_map(|message| match message {
                Ok(task) => Some((task.id.clone(), task.reply_to.clone()?)),
                Err(refused) => Some((refused.id.clone()?, refused.reply_to.clone()?)),
            })
            .collect();
        rpc.remember(&replies).await
    }

    /// Writes the results of `ended` (task id, outcome).
    pub async fn store(&self, ended: &[(String, Outcome)]) -> Result<(), ResultError> {
        match self {
            ResultBackend::Redis(redis) => Ok(redis.store(ended).await?),
            ResultBackend::Rpc(rpc) => rpc.store(ended).await,
        }
    }

    /// [`ResultBackend::store`], logging a failure instead of returning it:
    /// the job's end is in the ledger whatever becomes of its result.
    pub async fn store_logged(&self, ended: &[(String, Outcome)]) {
        if let Err(error) = self.store(ended).await {
            tracing::warn!(%error, results = ended.len(), "could not write Celery results");
        }
    }
}

/// How a task ended, in Celery's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job's result: for herald's jobs `{"created": n, "existing": m}`
    /// (notifications this run created, and those an earlier run had).
    Success(Value),
    /// An exception `module.kind(message)`; `AsyncResult.get()` raises it
    /// (a `builtins` type as itself, any other name as a class Celery makes).
    Failure {
        exc_type: String,
        exc_module: String,
        message: String,
    },
    /// Revoked (`expired`): `get()` raises `TaskRevokedError`.
    Revoked(String),
    /// Started on the node named (`task_track_started`): not an end, so
    /// `get()` waits on.
    Started(String),
}

impl Outcome {
    /// A finished job's result.
    pub fn done(outcome: &JobOutcome) -> Outcome {
        Outcome::Success(json!({"created": outcome.created, "existing": outcome.existing}))
    }

    /// A Python built-in exception (`ValueError`, `TypeError`, `RuntimeError`).
    pub fn builtin(exc_type: &str, message: impl Into<String>) -> Outcome {
        Outcome::Failure {
            exc_type: exc_type.into(),
            exc_module: "builtins".into(),
            message: message.into(),
        }
    }

    /// Celery's own `NotRegistered(name)`, as a worker stores it for a task
    /// name it does not know.
    pub fn not_registered(task: &str) -> Outcome {
        Outcome::Failure {
            exc_type: "NotRegistered".into(),
            exc_module: "celery.exceptions".into(),
            message: task.into(),
        }
    }

    fn status(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "SUCCESS",
            Outcome::Failure { .. } => "FAILURE",
            Outcome::Revoked(_) => "REVOKED",
            Outcome::Started(_) => "STARTED",
        }
    }

    /// Whether this is the task's end (Celery's `READY_STATES`).
    pub fn is_ready(&self) -> bool {
        !matches!(self, Outcome::Started(_))
    }
}

/// The value Celery stores for `task_id` (`BaseBackend._get_result_meta`),
/// `date_done` in Python's isoformat.
pub fn meta(task_id: &str, outcome: &Outcome, now: DateTime<Utc>) -> Value {
    let (result, traceback) = match outcome {
        Outcome::Success(value) => (value.clone(), Value::Null),
        Outcome::Failure {
            exc_type,
            exc_module,
            message,
        } => (
            json!({"exc_type": exc_type, "exc_message": [message], "exc_module": exc_module}),
            // What Celery would show as the remote traceback: herald runs
            // no Python, so the one line says where the failure came from.
            json!(format!("herald: {exc_type}: {message}\n")),
        ),
        Outcome::Revoked(reason) => (
            json!({"exc_type": "TaskRevokedError", "exc_message": [reason],
                   "exc_module": "celery.exceptions"}),
            Value::Null,
        ),
        Outcome::Started(hostname) => (
            json!({"pid": std::process::id(), "hostname": hostname}),
            Value::Null,
        ),
    };
    // Celery dates only a ready state.
    let date_done = if outcome.is_ready() {
        json!(isoformat(now))
    } else {
        Value::Null
    };
    json!({
        "status": outcome.status(),
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": date_done,
        "task_id": task_id,
    })
}

/// Python's `datetime.isoformat()` of a UTC time: microseconds unless
/// they are zero, then `+00:00`.
fn isoformat(at: DateTime<Utc>) -> String {
    use chrono::Timelike;
    if at.nanosecond() / 1000 == 0 {
        at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../../tests/fixtures/celery/redis-broker-messages.json");

    /// The vectors' result values, with the fields a worker sets differently.
    fn vector(n: u8) -> Value {
        let all: Value = serde_json::from_str(VECTORS).unwrap();
        let key = format!("celery-task-meta-0b1f4c1e-0000-4000-8000-00000000000{n}");
        all["result_keys"][key]["value"].clone()
    }

    fn same_shape(ours: &Value, theirs: &Value) {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(ours), keys(theirs));
        assert_eq!(ours["status"], theirs["status"]);
    }

    #[test]
    fn success_and_failure_have_celerys_fields() {
        let at: DateTime<Utc> = "2026-11-30T08:10:42.935506Z".parse().unwrap();
        let success = vector(1);
        let ours = meta(
            "0b1f4c1e-0000-4000-8000-000000000001",
            &Outcome::Success(json!(2)),
            at,
        );
        same_shape(&ours, &success);
        assert_eq!(ours["date_done"], success["date_done"]);
        assert_eq!(ours["task_id"], success["task_id"]);
        assert_eq!(ours["result"], 2);
        assert_eq!(ours["children"], json!([]));
        let failure = vector(2);
        let ours = meta(
            "0b1f4c1e-0000-4000-8000-000000000002",
            &Outcome::builtin("ValueError", "user_id: invalid"),
            at,
        );
        same_shape(&ours, &failure);
        assert_eq!(ours["result"], failure["result"]);
        assert!(
            ours["traceback"]
                .as_str()
                .unwrap()
                .contains("ValueError: user_id: invalid")
        );
    }

    #[test]
    fn started_is_not_an_end_and_has_no_date() {
        let at = chrono::Utc::now();
        let started = meta("id", &Outcome::Started("herald@web1".into()), at);
        assert_eq!(started["status"], "STARTED");
        assert_eq!(started["result"]["hostname"], "herald@web1");
        assert_eq!(started["result"]["pid"], std::process::id());
        assert_eq!(started["date_done"], Value::Null);
        assert!(!Outcome::Started("n".into()).is_ready());
        assert!(Outcome::Revoked("revoked".into()).is_ready());
    }

    #[test]
    fn revoked_and_not_registered_name_celerys_exceptions() {
        let at = Utc::now();
        let revoked = meta("id", &Outcome::Revoked("expired".into()), at);
        assert_eq!(revoked["status"], "REVOKED");
        assert_eq!(
            revoked["result"],
            json!({"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"})
        );
        let unknown = meta("id", &Outcome::not_registered("apps.x"), at);
        assert_eq!(unknown["result"]["exc_module"], "celery.exceptions");
        assert_eq!(unknown["result"]["exc_message"], json!(["apps.x"]));
        let whole_seconds: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let done = meta("id", &Outcome::Success(json!(null)), whole_seconds);
        assert_eq!(done["date_done"], "2030-01-01T00:00:00+00:00");
    }
}
