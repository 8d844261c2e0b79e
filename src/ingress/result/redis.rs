//! Celery's Redis result backend, written the way a Celery worker writes
//! it: `celery-task-meta-<id>` holds `{status, result, traceback, children,
//! date_done, task_id}` as JSON for `result_expires`, and the same bytes are
//! published on a channel of the same name, which `AsyncResult.get()`
//! listens on. A SUCCESS already there is never overwritten.

use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::{Outcome, meta};

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
pub struct RedisResults {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    expires: Duration,
    script: std::sync::Arc<redis::Script>,
}

impl RedisResults {
    /// For `url` (`celery.result_backend`), results living `expires`.
    pub fn new(url: &SecretString, expires: Duration) -> Result<RedisResults, redis::RedisError> {
        Ok(RedisResults {
            client: redis::Client::open(url.expose_secret().trim())?,
            conn: Default::default(),
            expires,
            script: std::sync::Arc::new(redis::Script::new(STORE)),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        let config = crate::ingress::redis_timeouts();
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
}

/// `celery-task-meta-<id>`, the key (and channel) of a task's result.
pub fn key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}
