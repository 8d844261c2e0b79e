//! Configuration: built-in defaults (`config/default.toml`), then an optional
//! file given with `--config`, then the environment (`DATABASE_URL`,
//! `REDIS_URL`, `SECRET_KEY`, and `HERALD_<SECTION>__<KEY>`).
//!
//! Loading either yields a validated [`Settings`] or a [`ConfigError`] naming
//! the offending key; `main` turns the latter into one line and exit status 2.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, compiled in so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Keys `HERALD_*` variables may set beyond those in config/default.toml
/// (optional ones, commented out there).
const OPTIONAL_KEYS: [&str; 2] = ["secret_key", "sidecar.demo"];

/// `HERALD_*` variables that are not settings but are herald's own: the log
/// format (read by telemetry) and those of its test and bench scripts.
const OWN_VARIABLES: [&str; 6] = [
    "HERALD_LOG_FORMAT",
    "HERALD_BLESS",
    "HERALD_VENV",
    "HERALD_PYTHON",
    "HERALD_TEST_",
    "HERALD_BENCH_",
];

/// File inside `data_dir` that keeps the generated secret key.
const SECRET_FILE: &str = "secret_key";

/// Largest `queue.batch_size`: an event job makes at most two
/// notifications of 8 bound values each, in one statement per batch.
const MAX_BATCH_SIZE: usize = 2000;

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

/// The Celery ingress (`crate::ingress`): Celery task messages taken from
/// a Redis broker and run as herald jobs; off while `broker_url` is empty.
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
    /// Lifetime of a result (Celery's `result_expires`); 0: no expiry.
    #[serde(with = "humantime_serde")]
    pub result_expires: Duration,
    /// kombu's `global_keyprefix` transport option, on every broker key.
    pub global_keyprefix: String,
    /// kombu's `priority_steps`: one list per step, lowest served first.
    pub priority_steps: Vec<u8>,
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

/// Whether the part of a `HERALD_` variable after the prefix names a
/// setting: `SECTION__KEY` (or `KEY` at the top level) that the defaults
/// have, or an optional one. Matched without case, as figment does.
fn is_setting(name: &str) -> bool {
    static DEFAULTS: std::sync::LazyLock<Figment> =
        std::sync::LazyLock::new(|| Figment::from(Toml::string(DEFAULT_TOML)));
    let key = name.to_ascii_lowercase().replace("__", ".");
    !key.is_empty() && (DEFAULTS.contains(&key) || OPTIONAL_KEYS.contains(&key.as_str()))
}

/// The `HERALD_*` variables among `names` that name no setting (variables
/// an application's shared env file sets for its own use, such as
/// `HERALD_API_URL`): warned about and ignored, never an error.
pub fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .filter(|name| {
            name.strip_prefix("HERALD_")
                .is_some_and(|rest| !is_setting(rest))
                && !OWN_VARIABLES.iter().any(|own| name.starts_with(own))
        })
        .collect();
    unknown.sort();
    unknown
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

    /// Loads defaults, then `file` (which must exist when given), then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        if let Ok(url) = std::env::var("REDIS_URL") {
            figment = figment.merge(Serialized::default("layer.hosts", vec![url]));
        }
        let figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["SECRET_KEY"])
                    .map(|_| "secret_key".into()),
            )
            // Celery's own names, so one environment serves both.
            .merge(
                Env::raw()
                    .only(&["CELERY_BROKER_URL"])
                    .map(|_| "celery.broker_url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["CELERY_RESULT_BACKEND"])
                    .map(|_| "celery.result_backend".into()),
            )
            .merge(
                Env::prefixed("HERALD_")
                    .filter(|key| is_setting(key.as_str()))
                    .split("__"),
            );
        let unknown = unknown_variables(std::env::vars().map(|(name, _)| name));
        if !unknown.is_empty() {
            tracing::warn!(
                variables = %unknown.join(", "),
                "ignoring HERALD_* environment variables that name no setting"
            );
        }
        let settings: Settings = figment.extract().map_err(from_figment)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("layer.expiry", self.layer.expiry as usize),
            ("layer.group_expiry", self.layer.group_expiry as usize),
            ("layer.capacity", self.layer.capacity),
            (
                "database.max_connections",
                self.database.max_connections as usize,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        let sidecar = &self.sidecar;
        let positive = [
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
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        let durations = [
            ("sidecar.ping_interval", sidecar.ping_interval),
            ("sidecar.ping_timeout", sidecar.ping_timeout),
            ("sidecar.write_timeout", sidecar.write_timeout),
            ("sidecar.group_renew_interval", sidecar.group_renew_interval),
            ("sidecar.header_timeout", sidecar.header_timeout),
        ];
        for (key, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if sidecar.group_renew_interval.as_secs() >= self.layer.group_expiry {
            return Err(ConfigError::new(
                "sidecar.group_renew_interval",
                "must be shorter than layer.group_expiry",
            ));
        }
        if sidecar.replay_limit > crate::store::PAGE_LIMIT {
            return Err(ConfigError::new(
                "sidecar.replay_limit",
                format!("must be at most {}", crate::store::PAGE_LIMIT),
            ));
        }
        sidecar
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::new("sidecar.listen", e.to_string()))?;
        self.validate_user_table()?;
        self.check_development()?;
        for (i, entry) in self.layer.channel_capacity.iter().enumerate() {
            let key = format!("layer.channel_capacity[{i}]");
            globset::Glob::new(&entry.pattern)
                .map_err(|e| ConfigError::new(&key, e.to_string()))?;
            if entry.capacity == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        self.validate_layer()?;
        self.validate_worker()?;
        for (key, value) in [
            ("dashboard.session_ttl", self.dashboard.session_ttl),
            (
                "dashboard.heartbeat_interval",
                self.dashboard.heartbeat_interval,
            ),
            ("dashboard.process_timeout", self.dashboard.process_timeout),
            (
                "dashboard.refresh_interval",
                self.dashboard.refresh_interval,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if self.dashboard.process_timeout <= self.dashboard.heartbeat_interval {
            return Err(ConfigError::new(
                "dashboard.process_timeout",
                "must be longer than dashboard.heartbeat_interval",
            ));
        }
        self.validate_queue()?;
        crate::ingress::check_settings(&self.celery)?;
        if self.tokens.access_ttl.is_zero() {
            return Err(ConfigError::new(
                "tokens.access_ttl",
                "must be greater than 0",
            ));
        }
        if let Some(secret) = &self.secret_key
            && secret.expose_secret().trim().is_empty()
        {
            return Err(ConfigError::new("secret_key", "must not be empty"));
        }
        self.database_url().map(|_| ())
    }

    fn validate_user_table(&self) -> Result<(), ConfigError> {
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
        for (key, ok) in names {
            if !ok {
                return Err(ConfigError::new(
                    key,
                    "must be a plain SQL name: letters, digits and _ (the table may be schema.table)",
                ));
            }
        }
        if sidecar.user_cache_ttl.is_zero() {
            return Err(ConfigError::new(
                "sidecar.user_cache_ttl",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_layer(&self) -> Result<(), ConfigError> {
        let layer = &self.layer;
        if layer.backend != LayerBackend::Memory && layer.hosts.is_empty() {
            return Err(ConfigError::new(
                "layer.hosts",
                "needs at least one Redis URL",
            ));
        }
        for (i, host) in layer.hosts.iter().enumerate() {
            let key = format!("layer.hosts[{i}]");
            let info = redis::IntoConnectionInfo::into_connection_info(host.as_str())
                .map_err(|e| ConfigError::new(&key, e.to_string()))?;
            drop(info);
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

    fn validate_queue(&self) -> Result<(), ConfigError> {
        let queue = &self.queue;
        for (section, keys) in [
            (
                "queue.concurrency",
                queue
                    .concurrency
                    .iter()
                    .map(|(k, v)| (k, *v as u64))
                    .collect::<Vec<_>>(),
            ),
            (
                "queue.attempts",
                queue
                    .attempts
                    .iter()
                    .map(|(k, v)| (k, u64::from(*v)))
                    .collect(),
            ),
        ] {
            for (kind, value) in keys {
                let key = format!("{section}.{kind}");
                if !crate::jobs::KINDS.contains(&kind.as_str()) {
                    let reason = format!(
                        "unknown job kind; known kinds: {}",
                        crate::jobs::KINDS.join(", ")
                    );
                    return Err(ConfigError::new(key, reason));
                }
                if value == 0 {
                    return Err(ConfigError::new(key, "must be greater than 0"));
                }
            }
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
        for (key, value) in [
            ("queue.batch_size", queue.batch_size),
            ("queue.batches", queue.batches),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            ("queue.poll_interval", queue.poll_interval),
            ("queue.heartbeat_interval", queue.heartbeat_interval),
            ("queue.retry_base", queue.retry_base),
            ("queue.retry_max", queue.retry_max),
            ("queue.keep_done", queue.keep_done),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if queue.backend == QueueBackend::Redis && self.queue_redis_url().is_none() {
            return Err(ConfigError::new(
                "queue.redis_url",
                "backend \"redis\" needs a Redis URL (queue.redis_url or REDIS_URL)",
            ));
        }
        if let Some(url) = self.queue_redis_url() {
            redis::IntoConnectionInfo::into_connection_info(url)
                .map_err(|e| ConfigError::new("queue.redis_url", e.to_string()))?;
        }
        if queue.prefix.is_empty() {
            return Err(ConfigError::new("queue.prefix", "must not be empty"));
        }
        for (key, size) in [
            ("api.max_body_size", self.api.max_body_size),
            ("api.max_batch_body_size", self.api.max_batch_body_size),
        ] {
            if size == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The Redis URL of the Redis queue: queue.redis_url, else the layer's
    /// first host.
    pub fn queue_redis_url(&self) -> Option<&str> {
        if !self.queue.redis_url.is_empty() {
            return Some(&self.queue.redis_url);
        }
        self.layer.hosts.first().map(String::as_str)
    }

    fn validate_worker(&self) -> Result<(), ConfigError> {
        let worker = &self.worker;
        for (key, schedule) in [
            ("worker.overdue_schedule", &worker.overdue_schedule),
            (
                "worker.deadline_reminder_schedule",
                &worker.deadline_reminder_schedule,
            ),
        ] {
            crate::worker::scheduler::parse_cron(schedule)
                .map_err(|reason| ConfigError::new(key, reason))?;
        }
        if worker.reminder_offsets.iter().any(Duration::is_zero) {
            return Err(ConfigError::new(
                "worker.reminder_offsets",
                "offsets must be greater than 0",
            ));
        }
        if worker.outbox_retry_every.is_zero() {
            return Err(ConfigError::new(
                "worker.outbox_retry_every",
                "must be greater than 0",
            ));
        }
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

    /// Turns development mode on, where it is safe: the embedded SQLite
    /// store, herald's generated secret (never a configured SECRET_KEY,
    /// which may be the application's own) and a loopback listen address.
    pub fn enable_development(&mut self) -> Result<(), ConfigError> {
        self.development = true;
        self.check_development()
    }

    fn check_development(&self) -> Result<(), ConfigError> {
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
            None => load_or_create_secret(&self.data_dir.join(SECRET_FILE)),
        }
    }
}

/// Turns figment's error into "key: reason", keeping only the first error.
fn from_figment(error: figment::Error) -> ConfigError {
    let first = error.into_iter().next();
    let Some(error) = first else {
        return ConfigError::new("configuration", "unknown error");
    };
    let key = if error.path.is_empty() {
        "configuration".to_string()
    } else {
        error.path.join(".")
    };
    let mut reason = error.kind.to_string();
    if let Some(source) = error.metadata.as_ref().map(|m| m.name.to_string()) {
        reason = format!("{reason} (from {source})");
    }
    ConfigError::new(key, reason.replace('\n', " "))
}

fn load_or_create_secret(path: &Path) -> Result<SecretString, ConfigError> {
    let key = path.display().to_string();
    let fail = |e: std::io::Error| ConfigError::new(&key, e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let new_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match new_file {
        Ok(mut file) => {
            let secret = generate_secret();
            file.write_all(secret.as_bytes()).map_err(fail)?;
            file.sync_all().map_err(fail)?;
            Ok(SecretString::from(secret))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_secret(path, &key),
        Err(e) => Err(fail(e)),
    }
}

fn read_secret(path: &Path, key: &str) -> Result<SecretString, ConfigError> {
    let fail = |e: std::io::Error| ConfigError::new(key, e.to_string());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mode = file.metadata().map_err(fail)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            key,
            format!("permissions {mode:04o} are too open; run chmod 600 on it"),
        ));
    }
    let mut secret = String::new();
    file.read_to_string(&mut secret).map_err(fail)?;
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err(ConfigError::new(key, "the secret key file is empty"));
    }
    Ok(SecretString::from(secret))
}

/// 50 characters from Django's `get_random_secret_key` alphabet, from the OS RNG.
fn generate_secret() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)";
    let mut rng = rand::rng();
    (0..50)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_kept_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(SECRET_FILE);
        let first = load_or_create_secret(&path).unwrap();
        let second = load_or_create_secret(&path).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 50);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn secret_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_secret(&path).unwrap_err();
        assert!(err.reason.contains("too open"), "{err}");
    }

    #[test]
    fn herald_variables_that_name_no_setting_are_picked_out() {
        let names = [
            "HERALD_API_URL",
            "HERALD_API__KEY",
            "HERALD_API__URL",
            "HERALD_LAYER__CAPACITY",
            "HERALD_QUEUE__CONCURRENCY__NOTIFY",
            "HERALD_SIDECAR__DEMO",
            "HERALD_SECRET_KEY",
            "HERALD_LOG_FORMAT",
            "HERALD_TEST_POSTGRES_URL",
            "HERALD_DATA_DIR",
            "HERALD_DATABASEX",
            "HERALD_",
            "DATABASE_URL",
        ];
        let unknown = unknown_variables(names.iter().map(|n| n.to_string()));
        assert_eq!(
            unknown,
            [
                "HERALD_",
                "HERALD_API_URL",
                "HERALD_API__URL",
                "HERALD_DATABASEX"
            ]
        );
    }

    #[test]
    fn built_in_defaults_are_valid() {
        let settings = Settings::defaults();
        settings.validate().unwrap();
        assert_eq!(settings.layer.prefix, "asgi");
        assert!(settings.secret_key.is_none(), "no built-in secret");
    }

    #[test]
    fn sidecar_keys_are_checked() {
        let mut settings = Settings::defaults();
        settings.layer.group_expiry = 60;
        let err = settings.validate().unwrap_err();
        assert_eq!(err.key, "sidecar.group_renew_interval");
        let mut settings = Settings::defaults();
        settings.sidecar.listen = "nowhere".into();
        assert_eq!(settings.validate().unwrap_err().key, "sidecar.listen");
        let mut settings = Settings::defaults();
        settings.sidecar.queue_size = 0;
        assert_eq!(settings.validate().unwrap_err().key, "sidecar.queue_size");
        let mut settings = Settings::defaults();
        settings.sidecar.replay_limit = 501;
        assert_eq!(settings.validate().unwrap_err().key, "sidecar.replay_limit");
    }

    #[test]
    fn queue_keys_are_checked() {
        type Break = fn(&mut QueueSettings);
        let cases: [(&str, Break); 5] = [
            ("queue.batch_size", |q| q.batch_size = 0),
            ("queue.batch_size", |q| q.batch_size = MAX_BATCH_SIZE + 1),
            ("queue.batches", |q| q.batches = 0),
            ("queue.keep_done", |q| q.keep_done = Duration::ZERO),
            ("queue.concurrency.mail", |q| {
                q.concurrency.insert("mail".into(), 3);
            }),
        ];
        for (key, break_it) in cases {
            let mut settings = Settings::defaults();
            break_it(&mut settings.queue);
            assert_eq!(settings.validate().unwrap_err().key, key);
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
            assert_eq!(settings.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn two_generated_secrets_differ() {
        assert_ne!(generate_secret(), generate_secret());
    }
}
