//! Configuration: what each setting is (the schema below, defaults in
//! `config/default.toml`), how it is layered ([`load`]: defaults, an optional
//! file, the environment), the checks that need no other module ([`checks`])
//! and the generated secret ([`secret`]); `celery` holds the `[celery]`
//! schema. Each role checks its own settings
//! (`startup::check_settings` calls them); this module imports no role.

mod celery;
mod checks;
mod load;
mod secret;

pub use celery::{CelerySettings, CeleryTask};
pub use load::unknown_variables;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

/// The defaults, compiled in so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Why configuration could not be loaded; `key` is the dotted name of the
/// setting (or the file or variable) at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Home of the embedded SQLite file and the generated secret.
    pub data_dir: PathBuf,
    /// Development mode (`herald run --dev`): demo tokens and a keyless job
    /// API for clients on this machine. Checked by
    /// [`Settings::enable_development`].
    #[serde(default)]
    pub development: bool,
    /// Django's SECRET_KEY; `None` means "generate and keep one in data_dir".
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    pub database: DatabaseSettings,
    pub layer: LayerSettings,
    pub worker: WorkerSettings,
    pub queue: QueueSettings,
    pub api: ApiSettings,
    pub tokens: TokenSettings,
    pub sidecar: SidecarSettings,
    pub celery: CelerySettings,
    pub dashboard: DashboardSettings,
}

/// The operations dashboard (`GET /dashboard`, `GET /api/stats`) and the
/// heartbeat every process writes for it (docs/dashboard.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Serve `/dashboard` and `/api/stats` (on sidecar.listen and
    /// worker.listen).
    pub enabled: bool,
    /// How long a sign-in lasts: the session cookie's Max-Age.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Send the session cookie only over HTTPS (behind a TLS proxy).
    pub secure_cookie: bool,
    /// How often each process writes its heartbeat and figures.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A process whose heartbeat is older than this counts as gone.
    #[serde(with = "humantime_serde")]
    pub process_timeout: Duration,
    /// How often an open page gets fresh figures (one read of the fleet
    /// per process serving pages, however many pages are open).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

/// Where jobs wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// SQLite (a file in data_dir) or PostgreSQL, following database.url.
    Database,
    Redis,
}

/// The job queues (apalis) and herald's retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub backend: QueueBackend,
    pub redis_url: String,
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most event jobs (file_attached, status_changed, notify) run as one
    /// batch: one ledger read, one task read, one commit, one publish pass.
    pub batch_size: usize,
    /// Batches of event jobs that run at once in one process.
    pub batches: usize,
    /// Done jobs (ledger rows and queue entries) are deleted this long
    /// after they ended.
    #[serde(with = "humantime_serde")]
    pub keep_done: Duration,
    /// Per job kind.
    pub concurrency: BTreeMap<String, usize>,
    /// Per job kind.
    pub attempts: BTreeMap<String, u32>,
}

impl QueueSettings {
    /// The queue name for jobs of `kind`: `<prefix>.<kind>`.
    pub fn queue_name(&self, kind: &str) -> String {
        format!("{}.{kind}", self.prefix)
    }

    /// Jobs of `kind` one process runs at once.
    pub fn concurrency_of(&self, kind: &str) -> usize {
        self.concurrency.get(kind).copied().unwrap_or(1)
    }

    /// Attempts a job of `kind` gets.
    pub fn attempts_of(&self, kind: &str) -> u32 {
        self.attempts.get(kind).copied().unwrap_or(1)
    }
}

/// The HTTP job API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Empty: no key (accepted only on a loopback listener).
    pub key: SecretString,
    pub max_body_size: usize,
    /// The body limit of `POST /api/jobs/batch`.
    pub max_batch_body_size: usize,
}

/// The worker's scans and schedules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    #[serde(deserialize_with = "durations")]
    pub reminder_offsets: Vec<Duration>,
    pub closed_statuses: Vec<String>,
    /// Six-field cron (with seconds), UTC.
    pub overdue_schedule: String,
    pub deadline_reminder_schedule: String,
    #[serde(with = "humantime_serde")]
    pub outbox_retry_every: Duration,
    /// Where `herald worker` serves /metrics; empty: nowhere.
    pub listen: String,
    /// The `type` each job kind's notifications get.
    pub notification_types: NotificationTypes,
}

/// The `type` column each job kind writes: the application's
/// `Notification.Type` choices (`notify` jobs carry their own).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationTypes {
    pub deadline_reminder: String,
    pub overdue: String,
    pub file_attached: String,
    pub status_changed: String,
}

impl Default for NotificationTypes {
    /// The documented defaults (config/default.toml).
    fn default() -> Self {
        Settings::defaults().worker.notification_types
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty means the embedded SQLite file.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

/// Which channel layer implementation carries group messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerBackend {
    /// In-process only (`herald run`).
    Memory,
    /// channels_redis's `RedisChannelLayer` (sorted sets).
    Redis,
    /// channels_redis's `RedisPubSubChannelLayer`.
    RedisPubsub,
}

/// Channel layer knobs, named as channels / channels_redis name them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSettings {
    pub backend: LayerBackend,
    /// Redis URLs; more than one shards as channels_redis does.
    pub hosts: Vec<String>,
    /// Prepended to every Redis key (channels_redis `prefix`).
    pub prefix: String,
    /// Fernet keys; the first encrypts, every one decrypts.
    #[serde(default)]
    pub symmetric_encryption_keys: Vec<SecretString>,
    /// Seconds a message may wait in a channel.
    pub expiry: u64,
    /// Seconds a group membership lasts unless renewed.
    pub group_expiry: u64,
    /// Default per-channel capacity.
    pub capacity: usize,
    /// Per-channel capacities: glob pattern and capacity, first match wins.
    #[serde(default)]
    pub channel_capacity: Vec<ChannelCapacity>,
    /// Herald's own: how long a group copy that finds its Redis queue at
    /// capacity is held and retried before it counts as undelivered; zero
    /// drops it at once, as channels_redis does.
    #[serde(with = "humantime_serde")]
    pub full_channel_deadline: Duration,
}

/// One `[[layer.channel_capacity]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCapacity {
    /// Glob over channel names (`*`, `?`, `[...]`), as channels' fnmatch.
    pub pattern: String,
    pub capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
}

/// A list of human durations ("24h", "90m").
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let list: Vec<humantime_serde::Serde<Duration>> = Deserialize::deserialize(deserializer)?;
    Ok(list
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

/// The WebSocket sidecar (`herald sidecar`): where it listens and the limits
/// that keep each connection's memory and the process's sockets bounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarSettings {
    /// Address and port to listen on, such as `127.0.0.1:8001`.
    pub listen: String,
    /// Open WebSocket connections the process accepts; more get close 1013.
    pub max_connections: usize,
    /// Open connections one user may hold; more get close 4029.
    pub max_connections_per_user: usize,
    /// Largest inbound WebSocket message in bytes; larger closes with 1009.
    pub max_message_size: usize,
    /// The socket's read and write buffer sizes in bytes (tungstenite's
    /// default of 128 KiB per connection would cost 1 GB per 8,000 sockets).
    pub buffer_size: usize,
    /// How often the server pings each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client silent this long after a ping is dropped (close 4002).
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Outbound events queued per connection before the client counts as
    /// slow and is closed with 4008.
    pub queue_size: usize,
    /// Longest time one write to a client may take before it counts as slow.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most missed notifications sent for one resume (at most 500).
    pub replay_limit: i64,
    /// A resume from id N also reads the rows at or below N created this
    /// long before row N: a transaction that committed a lower id after a
    /// higher one was delivered is caught if it took less than this.
    #[serde(with = "humantime_serde")]
    pub resume_lookback: Duration,
    /// How often each connection re-joins its group, so a connection older
    /// than `layer.group_expiry` stays a member; must be shorter than it.
    #[serde(with = "humantime_serde")]
    pub group_renew_interval: Duration,
    /// Origins (`scheme://host[:port]`) whose pages may authenticate with
    /// the `access` cookie; empty means the sidecar's own host only.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Serve the demo page at `/`; unset means yes in `herald run` and no
    /// in `herald sidecar`.
    #[serde(default)]
    pub demo: Option<bool>,
    /// How long shutdown waits for clients to take their 1001 close.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections open at once that are not WebSockets (yet): requests
    /// under way and handshakes not finished; more are closed at once.
    pub max_pending_connections: usize,
    /// Inbound WebSocket messages a client may send per second (bursts of
    /// twice as many); faster closes with 1008 "rate_limited".
    pub client_messages_per_second: u32,
    /// Whether a token's user must exist and be active in `user_table`.
    pub user_check: UserCheckMode,
    /// The application's user table (`auth_user`, or the custom user
    /// model's), optionally `schema.table`.
    pub user_table: String,
    pub user_id_column: String,
    /// Empty: every user that exists counts as active.
    pub user_active_column: String,
    /// How long a user's answer (and the table's existence) is reused.
    #[serde(with = "humantime_serde")]
    pub user_cache_ttl: Duration,
}

/// `sidecar.user_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserCheckMode {
    /// Check while the database has `user_table`.
    Auto,
    /// Always check; a missing table refuses every socket.
    On,
    Off,
}

impl Settings {
    /// The built-in defaults alone (config/default.toml), ignoring files
    /// and the environment.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid (checked by a test)")
    }

    /// The Redis URL of the Redis queue: queue.redis_url, else the layer's
    /// first host.
    pub fn queue_redis_url(&self) -> Option<&str> {
        if !self.queue.redis_url.is_empty() {
            return Some(&self.queue.redis_url);
        }
        self.layer.hosts.first().map(String::as_str)
    }

    /// Turns development mode on, where it is safe: the embedded SQLite
    /// store, herald's generated secret (never a configured SECRET_KEY,
    /// which may be the application's own) and a loopback listen address.
    pub fn enable_development(&mut self) -> Result<(), ConfigError> {
        self.development = true;
        self.check_development()
    }

    /// The embedded mode: the SQLite store (no database URL, or a sqlite: one).
    pub fn is_embedded(&self) -> bool {
        let url = self.database.url.trim();
        url.is_empty() || url.starts_with("sqlite:")
    }

    /// The database URL to use: the configured one, or the embedded SQLite
    /// file in `data_dir`.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        let url = self.database.url.trim();
        if url.is_empty() {
            return Ok(format!(
                "sqlite://{}",
                self.data_dir.join("herald.sqlite3").display()
            ));
        }
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if known.iter().any(|scheme| url.starts_with(scheme)) {
            Ok(url.to_string())
        } else {
            Err(ConfigError::new(
                "database.url",
                "expected a sqlite:// or postgres:// URL",
            ))
        }
    }

    /// The signing secret: the configured one, else the key kept in
    /// `<data_dir>/secret_key`, generated on first use with mode 0600.
    pub fn secret(&self) -> Result<SecretString, ConfigError> {
        match &self.secret_key {
            Some(secret) => Ok(secret.clone()),
            None => secret::load_or_create(&self.data_dir),
        }
    }
}
