//! `[celery]` as the ingress reads it: the check `startup` runs at load
//! (broker URLs, queues, sizes, intervals, priority steps, the task routes),
//! and the result backend the settings name.

use secrecy::ExposeSecret;

use super::result::{RedisResults, RpcResults};
use super::{ResultBackend, Routes};
use crate::config::{CelerySettings, ConfigError};
use crate::queue::MAX_BATCH;
use crate::store::Store;

/// Checks `[celery]`: the check `startup` runs at load.
pub fn check_settings(settings: &CelerySettings) -> Result<(), ConfigError> {
    // The URLs may hold a password: no reason repeats them.
    let broker = settings.broker_url.expose_secret().trim();
    if settings.enabled() {
        if super::broker::amqp::is_amqp(broker) {
            super::broker::amqp::url::parse(broker)
                .map_err(|e| ConfigError::new("celery.broker_url", e.to_string()))?;
        } else if !is_redis(broker) {
            return Err(ConfigError::new(
                "celery.broker_url",
                "expected Celery's Redis broker (redis://, rediss:// or unix://) \
                 or its AMQP broker (amqp://, amqps:// or pyamqp://)",
            ));
        }
    }
    let backend = settings.result_backend.expose_secret().trim();
    if settings.results_enabled() {
        if is_rpc(backend) {
            if !super::broker::amqp::is_amqp(broker) {
                return Err(ConfigError::new(
                    "celery.result_backend",
                    "rpc:// sends results over the broker: herald does so on an AMQP \
                     broker_url (amqp://, amqps:// or pyamqp://) only",
                ));
            }
        } else if !is_redis(backend) {
            return Err(ConfigError::new(
                "celery.result_backend",
                "herald writes Celery's Redis result backend (a redis://, rediss:// or \
                 unix:// URL) or its rpc:// backend",
            ));
        }
    }
    if !["classic", "quorum"].contains(&settings.queue_type.as_str()) {
        return Err(ConfigError::new(
            "celery.queue_type",
            "must be \"classic\" or \"quorum\" (Celery's task_create_missing_queue_type)",
        ));
    }
    if !["direct", "topic"].contains(&settings.queue_exchange_type.as_str()) {
        return Err(ConfigError::new(
            "celery.queue_exchange_type",
            "must be \"direct\" or \"topic\" (Celery's task_create_missing_queue_exchange_type)",
        ));
    }
    if !["classic", "quorum"].contains(&settings.delayed_delivery_queue_type.as_str()) {
        return Err(ConfigError::new(
            "celery.delayed_delivery_queue_type",
            "must be \"classic\" or \"quorum\" (Celery's broker_native_delayed_delivery_queue_type)",
        ));
    }
    if settings.queues.is_empty() || settings.queues.iter().any(|q| q.is_empty()) {
        return Err(ConfigError::new(
            "celery.queues",
            "needs at least one queue name, none empty",
        ));
    }
    if settings.batch_size == 0 || settings.batch_size > MAX_BATCH {
        let reason = format!("must be 1 to {MAX_BATCH}");
        return Err(ConfigError::new("celery.batch_size", reason));
    }
    if settings.concurrency == 0 {
        return Err(ConfigError::new(
            "celery.concurrency",
            "must be greater than 0",
        ));
    }
    for (key, value) in [
        ("celery.poll_interval", settings.poll_interval),
        ("celery.visibility_timeout", settings.visibility_timeout),
        ("celery.restore_after", settings.restore_after),
    ] {
        if value.is_zero() {
            return Err(ConfigError::new(key, "must be greater than 0"));
        }
    }
    if settings.priority_steps.is_empty() || settings.priority_steps.iter().any(|s| *s > 9) {
        return Err(ConfigError::new(
            "celery.priority_steps",
            "needs steps from 0 to 9, at least one",
        ));
    }
    Routes::new(settings).map(drop)
}

/// Whether `url` is a Redis URL the redis crate opens.
fn is_redis(url: &str) -> bool {
    let redis = ["redis://", "rediss://", "unix://", "redis+unix://"];
    redis.iter().any(|s| url.starts_with(s)) && redis::Client::open(url).is_ok()
}

/// Whether `url` names Celery's rpc:// backend (`rpc://`, with or without
/// anything after it, as Celery reads it).
fn is_rpc(url: &str) -> bool {
    url.starts_with("rpc://")
}

/// The result backend the worker writes to, when one is configured; rpc://
/// keeps its callers' reply queues in `store`.
pub fn result_backend(
    settings: &CelerySettings,
    store: &Store,
) -> Result<Option<ResultBackend>, ConfigError> {
    if !settings.results_enabled() {
        return Ok(None);
    }
    let backend = settings.result_backend.expose_secret().trim();
    if is_rpc(backend) {
        let uri = super::broker::amqp::url::parse(settings.broker_url.expose_secret())
            .map_err(|e| ConfigError::new("celery.broker_url", e.to_string()))?;
        let rpc = RpcResults::new(uri, store.clone(), settings.result_persistent);
        return Ok(Some(ResultBackend::Rpc(rpc)));
    }
    RedisResults::new(&settings.result_backend, settings.result_expires)
        .map(|redis| Some(ResultBackend::Redis(redis)))
        .map_err(|_| ConfigError::new("celery.result_backend", "not a Redis URL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn the_default_settings_are_valid_and_off() {
        let settings = Settings::defaults().celery;
        check_settings(&settings).unwrap();
        assert!(!settings.enabled() && !settings.results_enabled());
        assert_eq!(settings.queues, ["herald"]);
        let routes = Routes::new(&settings).unwrap();
        assert_eq!(
            routes.get("apps.tasks.tasks.file_attached").unwrap().kind,
            "file_attached"
        );
    }

    #[test]
    fn broker_urls_other_than_redis_and_amqp_are_refused_without_repeating_them() {
        let mut settings = Settings::defaults().celery;
        settings.broker_url = "sqs://key:s3cret@queue".to_string().into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "celery.broker_url");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        settings.broker_url = "amqp://guest:s3cret@rabbit:notaport//".to_string().into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "celery.broker_url");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        settings.broker_url = "pyamqp://guest:s3cret@rabbit//".to_string().into();
        check_settings(&settings).unwrap();
        settings.queue_type = "stream".into();
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "celery.queue_type"
        );
        settings.queue_type = "quorum".into();
        settings.queue_exchange_type = "fanout".into();
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "celery.queue_exchange_type"
        );
        settings.queue_exchange_type = "topic".into();
        settings.broker_url = "redis://:s3cret@127.0.0.1:6379/3".to_string().into();
        check_settings(&settings).unwrap();
        settings.batch_size = 0;
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "celery.batch_size"
        );
    }

    #[test]
    fn rpc_results_need_an_amqp_broker() {
        let mut settings = Settings::defaults().celery;
        settings.result_backend = "rpc://".to_string().into();
        settings.broker_url = "redis://127.0.0.1:6379/0".to_string().into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "celery.result_backend");
        assert!(error.to_string().contains("AMQP"), "{error}");
        settings.broker_url = "amqp://guest:guest@127.0.0.1:5672//".to_string().into();
        check_settings(&settings).unwrap();
        settings.result_backend = "django-db".to_string().into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "celery.result_backend");
    }
}
