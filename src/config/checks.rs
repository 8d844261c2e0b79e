//! The checks configuration can make alone: numbers that must be positive,
//! addresses and URLs that must parse, names that must be plain SQL. Checks
//! that need a role's knowledge (job kinds, cron syntax, page sizes, Celery
//! routes) live with that role and run from `startup::check_settings`.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::{ConfigError, LayerBackend, QueueBackend, Settings};

/// Largest `queue.batch_size`: an event job makes at most two
/// notifications of 8 bound values each, in one statement per batch.
pub(super) const MAX_BATCH_SIZE: usize = 2000;

/// Fails on the first count that is 0.
fn positive(counts: &[(&str, usize)]) -> Result<(), ConfigError> {
    match counts.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(ConfigError::new(*key, "must be greater than 0")),
        None => Ok(()),
    }
}

/// Fails on the first duration that is zero.
fn not_zero(durations: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, value)| value.is_zero()) {
        Some((key, _)) => Err(ConfigError::new(*key, "must be greater than 0")),
        None => Ok(()),
    }
}

/// `url` parses as a Redis connection URL.
fn redis_url(key: &str, url: &str) -> Result<(), ConfigError> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(drop)
        .map_err(|e| ConfigError::new(key, e.to_string()))
}

impl Settings {
    /// Every check configuration makes alone, in the order a reader meets
    /// the sections; the first failure names its key.
    pub fn check(&self) -> Result<(), ConfigError> {
        positive(&[(
            "database.max_connections",
            self.database.max_connections as usize,
        )])?;
        self.check_sidecar()?;
        self.check_user_table()?;
        self.check_development()?;
        self.check_layer()?;
        self.check_worker()?;
        self.check_dashboard()?;
        self.check_queue()?;
        self.check_api()?;
        not_zero(&[("tokens.access_ttl", self.tokens.access_ttl)])?;
        if let Some(secret) = &self.secret_key
            && secret.expose_secret().trim().is_empty()
        {
            return Err(ConfigError::new("secret_key", "must not be empty"));
        }
        self.database_url().map(|_| ())
    }

    fn check_sidecar(&self) -> Result<(), ConfigError> {
        let sidecar = &self.sidecar;
        positive(&[
            ("sidecar.max_connections", sidecar.max_connections),
            (
                "sidecar.max_connections_per_user",
                sidecar.max_connections_per_user,
            ),
            ("sidecar.max_message_size", sidecar.max_message_size),
            ("sidecar.buffer_size", sidecar.buffer_size),
            ("sidecar.queue_size", sidecar.queue_size),
            ("sidecar.replay_limit", sidecar.replay_limit.max(0) as usize),
            (
                "sidecar.max_pending_connections",
                sidecar.max_pending_connections,
            ),
            (
                "sidecar.client_messages_per_second",
                sidecar.client_messages_per_second as usize,
            ),
        ])?;
        not_zero(&[
            ("sidecar.ping_interval", sidecar.ping_interval),
            ("sidecar.ping_timeout", sidecar.ping_timeout),
            ("sidecar.write_timeout", sidecar.write_timeout),
            ("sidecar.group_renew_interval", sidecar.group_renew_interval),
            ("sidecar.header_timeout", sidecar.header_timeout),
        ])?;
        if sidecar.group_renew_interval.as_secs() >= self.layer.group_expiry {
            return Err(ConfigError::new(
                "sidecar.group_renew_interval",
                "must be shorter than layer.group_expiry",
            ));
        }
        sidecar
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::new("sidecar.listen", e.to_string()))?;
        Ok(())
    }

    fn check_user_table(&self) -> Result<(), ConfigError> {
        static IDENTIFIER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new("^[A-Za-z_][A-Za-z0-9_]{0,62}$").unwrap()
        });
        let sidecar = &self.sidecar;
        let table_ok = sidecar
            .user_table
            .splitn(2, '.')
            .all(|part| IDENTIFIER.is_match(part));
        let names = [
            ("sidecar.user_table", table_ok),
            (
                "sidecar.user_id_column",
                IDENTIFIER.is_match(&sidecar.user_id_column),
            ),
            (
                "sidecar.user_active_column",
                sidecar.user_active_column.is_empty()
                    || IDENTIFIER.is_match(&sidecar.user_active_column),
            ),
        ];
        if let Some((key, _)) = names.iter().find(|(_, ok)| !ok) {
            return Err(ConfigError::new(
                *key,
                "must be a plain SQL name: letters, digits and _ (the table may be schema.table)",
            ));
        }
        not_zero(&[("sidecar.user_cache_ttl", sidecar.user_cache_ttl)])
    }

    pub(super) fn check_development(&self) -> Result<(), ConfigError> {
        let refuse = |reason: &str| {
            Err(ConfigError::new(
                "development",
                format!("development mode needs {reason}"),
            ))
        };
        if !self.development {
            return Ok(());
        }
        if !self.is_embedded() {
            return refuse("the embedded SQLite store (database.url empty or sqlite:)");
        }
        if self.secret_key.is_some() {
            return refuse("herald's generated secret, not a configured SECRET_KEY");
        }
        let loopback = self
            .sidecar
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|address| address.ip().is_loopback());
        if !loopback {
            return refuse("sidecar.listen on a loopback address");
        }
        Ok(())
    }

    fn check_layer(&self) -> Result<(), ConfigError> {
        let layer = &self.layer;
        positive(&[
            ("layer.expiry", layer.expiry as usize),
            ("layer.group_expiry", layer.group_expiry as usize),
            ("layer.capacity", layer.capacity),
        ])?;
        for (i, entry) in layer.channel_capacity.iter().enumerate() {
            let key = format!("layer.channel_capacity[{i}]");
            globset::Glob::new(&entry.pattern)
                .map_err(|e| ConfigError::new(&key, e.to_string()))?;
            positive(&[(&key, entry.capacity)])?;
        }
        if layer.backend != LayerBackend::Memory && layer.hosts.is_empty() {
            return Err(ConfigError::new(
                "layer.hosts",
                "needs at least one Redis URL",
            ));
        }
        for (i, host) in layer.hosts.iter().enumerate() {
            redis_url(&format!("layer.hosts[{i}]"), host)?;
        }
        for (i, key) in layer.symmetric_encryption_keys.iter().enumerate() {
            if key.expose_secret().is_empty() {
                let name = format!("layer.symmetric_encryption_keys[{i}]");
                return Err(ConfigError::new(name, "must not be empty"));
            }
        }
        if layer.prefix.is_empty() {
            return Err(ConfigError::new("layer.prefix", "must not be empty"));
        }
        Ok(())
    }

    fn check_worker(&self) -> Result<(), ConfigError> {
        let worker = &self.worker;
        if worker.reminder_offsets.iter().any(Duration::is_zero) {
            return Err(ConfigError::new(
                "worker.reminder_offsets",
                "offsets must be greater than 0",
            ));
        }
        not_zero(&[("worker.outbox_retry_every", worker.outbox_retry_every)])?;
        let types = &worker.notification_types;
        for (kind, name) in [
            ("deadline_reminder", &types.deadline_reminder),
            ("overdue", &types.overdue),
            ("file_attached", &types.file_attached),
            ("status_changed", &types.status_changed),
        ] {
            if name.trim().is_empty() || name.chars().count() > 50 {
                let key = format!("worker.notification_types.{kind}");
                return Err(ConfigError::new(key, "must be 1 to 50 characters"));
            }
        }
        Ok(())
    }

    fn check_dashboard(&self) -> Result<(), ConfigError> {
        let dashboard = &self.dashboard;
        not_zero(&[
            ("dashboard.session_ttl", dashboard.session_ttl),
            ("dashboard.heartbeat_interval", dashboard.heartbeat_interval),
            ("dashboard.process_timeout", dashboard.process_timeout),
            ("dashboard.refresh_interval", dashboard.refresh_interval),
        ])?;
        if dashboard.process_timeout <= dashboard.heartbeat_interval {
            return Err(ConfigError::new(
                "dashboard.process_timeout",
                "must be longer than dashboard.heartbeat_interval",
            ));
        }
        Ok(())
    }

    /// The queue's numbers and URL; its kinds are the catalog's to check.
    fn check_queue(&self) -> Result<(), ConfigError> {
        let queue = &self.queue;
        for (kind, value) in &queue.concurrency {
            positive(&[(&format!("queue.concurrency.{kind}"), *value)])?;
        }
        for (kind, value) in &queue.attempts {
            positive(&[(&format!("queue.attempts.{kind}"), *value as usize)])?;
        }
        if queue.batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::new(
                "queue.batch_size",
                format!(
                    "at most {MAX_BATCH_SIZE}: a batch's notifications go in one statement, \
                     which SQLite bounds at 32,766 parameters"
                ),
            ));
        }
        positive(&[
            ("queue.batch_size", queue.batch_size),
            ("queue.batches", queue.batches),
        ])?;
        not_zero(&[
            ("queue.poll_interval", queue.poll_interval),
            ("queue.heartbeat_interval", queue.heartbeat_interval),
            ("queue.retry_base", queue.retry_base),
            ("queue.retry_max", queue.retry_max),
            ("queue.keep_done", queue.keep_done),
        ])?;
        if queue.backend == QueueBackend::Redis && self.queue_redis_url().is_none() {
            return Err(ConfigError::new(
                "queue.redis_url",
                "backend \"redis\" needs a Redis URL (queue.redis_url or REDIS_URL)",
            ));
        }
        if let Some(url) = self.queue_redis_url() {
            redis_url("queue.redis_url", url)?;
        }
        if queue.prefix.is_empty() {
            return Err(ConfigError::new("queue.prefix", "must not be empty"));
        }
        Ok(())
    }

    fn check_api(&self) -> Result<(), ConfigError> {
        positive(&[
            ("api.max_body_size", self.api.max_body_size),
            ("api.max_batch_body_size", self.api.max_batch_body_size),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::QueueSettings;
    use super::*;

    #[test]
    fn built_in_defaults_are_valid() {
        let settings = Settings::defaults();
        settings.check().unwrap();
        assert_eq!(settings.layer.prefix, "asgi");
        assert!(settings.secret_key.is_none(), "no built-in secret");
    }

    #[test]
    fn sidecar_keys_are_checked() {
        let mut settings = Settings::defaults();
        settings.layer.group_expiry = 60;
        let err = settings.check().unwrap_err();
        assert_eq!(err.key, "sidecar.group_renew_interval");
        let mut settings = Settings::defaults();
        settings.sidecar.listen = "nowhere".into();
        assert_eq!(settings.check().unwrap_err().key, "sidecar.listen");
        let mut settings = Settings::defaults();
        settings.sidecar.queue_size = 0;
        assert_eq!(settings.check().unwrap_err().key, "sidecar.queue_size");
    }

    #[test]
    fn queue_keys_are_checked() {
        type Break = fn(&mut QueueSettings);
        let cases: [(&str, Break); 5] = [
            ("queue.batch_size", |q| q.batch_size = 0),
            ("queue.batch_size", |q| q.batch_size = MAX_BATCH_SIZE + 1),
            ("queue.batches", |q| q.batches = 0),
            ("queue.keep_done", |q| q.keep_done = Duration::ZERO),
            ("queue.concurrency.notify", |q| {
                q.concurrency.insert("notify".into(), 0);
            }),
        ];
        for (key, break_it) in cases {
            let mut settings = Settings::defaults();
            break_it(&mut settings.queue);
            assert_eq!(settings.check().unwrap_err().key, key);
        }
    }

    #[test]
    fn api_body_limits_are_checked() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.api.max_body_size, 65_536);
        assert_eq!(defaults.api.max_batch_body_size, 4_194_304);
        for key in ["api.max_body_size", "api.max_batch_body_size"] {
            let mut settings = Settings::defaults();
            match key {
                "api.max_body_size" => settings.api.max_body_size = 0,
                _ => settings.api.max_batch_body_size = 0,
            }
            assert_eq!(settings.check().unwrap_err().key, key);
        }
    }
}
