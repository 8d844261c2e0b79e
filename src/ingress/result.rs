//! Celery's Redis result backend, written the way a Celery worker writes
//! it: `celery-task-meta-<id>` holds `{status, result, traceback, children,
//! date_done, task_id}` as JSON for `result_expires`, and the same bytes are
//! published on a channel of the same name, which `AsyncResult.get()`
//! listens on. A SUCCESS already there is never overwritten.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::jobs::JobOutcome;

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
        }
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
    };
    json!({
        "status": outcome.status(),
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": isoformat(now),
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

/// Stores each result unless a SUCCESS is there already, then publishes it:
/// KEYS are the result keys, ARGV[1] the lifetime in seconds (0: none),
/// then one value per key.
const STORE: &str = r"
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local kept = false
  if current then
    local ok, meta = pcall(cjson.decode, current)
    kept = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
  end
  if not kept then
    local value = ARGV[i + 1]
    if ttl > 0 then
      redis.call('SETEX', key, ttl, value)
    else
      redis.call('SET', key, value)
    end
    redis.call('PUBLISH', key, value)
  end
end
return 0
";

/// Results one script call stores at most.
const CHUNK: usize = 500;

/// The result backend: a Redis connection opened on first use.
#[derive(Clone)]
pub struct ResultBackend {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    expires: Duration,
    script: std::sync::Arc<redis::Script>,
}

impl ResultBackend {
    /// For `url` (`celery.result_backend`), results living `expires`.
    pub fn new(url: &SecretString, expires: Duration) -> Result<ResultBackend, redis::RedisError> {
        Ok(ResultBackend {
            client: redis::Client::open(url.expose_secret().trim())?,
            conn: Default::default(),
            expires,
            script: std::sync::Arc::new(redis::Script::new(STORE)),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        self.conn
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await
            .cloned()
    }

    /// Writes the results of `ended` (task id, outcome).
    pub async fn store(&self, ended: &[(String, Outcome)]) -> Result<(), redis::RedisError> {
        if ended.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let now = Utc::now();
        for chunk in ended.chunks(CHUNK) {
            let mut call = self.script.prepare_invoke();
            call.arg(self.expires.as_secs());
            for (id, outcome) in chunk {
                call.key(key(id)).arg(meta(id, outcome, now).to_string());
            }
            let () = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// [`ResultBackend::store`], logging a failure instead of returning it:
    /// the job's end is in the ledger whatever becomes of its result.
    pub async fn store_logged(&self, ended: &[(String, Outcome)]) {
        if let Err(error) = self.store(ended).await {
            tracing::warn!(%error, results = ended.len(), "could not write Celery results");
        }
    }
}

/// `celery-task-meta-<id>`, the key (and channel) of a task's result.
pub fn key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../tests/fixtures/celery/redis-broker-messages.json");

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
