//! Layering: the built-in defaults, then `--config`'s file, then the
//! environment (`DATABASE_URL`, `REDIS_URL`, `SECRET_KEY`, Celery's two
//! names and `HERALD_<SECTION>__<KEY>`), then [`Settings::check`]. Variables
//! under `HERALD_` that name no setting are warned about, never fatal.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::{ConfigError, DEFAULT_TOML, Settings};

/// Keys `HERALD_*` variables may set beyond those in config/default.toml
/// (optional ones, commented out there).
const OPTIONAL_KEYS: [&str; 2] = ["secret_key", "sidecar.demo"];

/// Variables of the application's that herald reads, and the setting each
/// fills; `HERALD_*` variables override them.
const FOREIGN_VARIABLES: [(&str, &str); 11] = [
    ("DATABASE_URL", "database.url"),
    ("SECRET_KEY", "secret_key"),
    ("CELERY_BROKER_URL", "celery.broker_url"),
    ("CELERY_RESULT_BACKEND", "celery.result_backend"),
    ("CELERY_RESULT_PERSISTENT", "celery.result_persistent"),
    (
        "CELERY_TASK_QUEUE_MAX_PRIORITY",
        "celery.queue_max_priority",
    ),
    ("CELERY_TASK_CREATE_MISSING_QUEUE_TYPE", "celery.queue_type"),
    (
        "CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE",
        "celery.queue_exchange_type",
    ),
    (
        "CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE",
        "celery.delayed_delivery_queue_type",
    ),
    ("CELERY_WORKER_SEND_TASK_EVENTS", "celery.send_task_events"),
    ("CELERY_TASK_TRACK_STARTED", "celery.track_started"),
];

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

impl Settings {
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
        // The application's own variable names (Django's, and Celery's so
        // one environment serves both), each for one setting.
        for (variable, key) in FOREIGN_VARIABLES {
            figment = figment.merge(Env::raw().only(&[variable]).map(move |_| key.into()));
        }
        let figment = figment.merge(
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
        settings.check()?;
        Ok(settings)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
