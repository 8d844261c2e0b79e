//! The binary: `migrate` twice on both databases, `token`, and bad
//! configuration giving exit status 2 with one line naming the key.

use std::process::{Command, Output};

use herald::store::Backend;
use secrecy::SecretString;

fn herald(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("REDIS_URL")
        .env("HERALD_DATA_DIR", data_dir);
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

async fn migrate_twice(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db_dir) = crate::helpers::fresh_database_url(backend).await;
    let run = || {
        herald(dir.path())
            .env("DATABASE_URL", &url)
            .arg("migrate")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("applied 3 migration"),
        "{}",
        stdout(&first)
    );
    let second = run();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("nothing to apply"),
        "{}",
        stdout(&second)
    );
}

#[tokio::test]
async fn migrate_twice_sqlite() {
    migrate_twice(Backend::Sqlite).await;
}

#[tokio::test]
async fn migrate_twice_postgres() {
    migrate_twice(Backend::Postgres).await;
}

#[test]
fn embedded_mode_needs_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path()).arg("migrate").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("herald.sqlite3").exists());
}

#[test]
fn token_uses_the_generated_secret_kept_in_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .args(["token", "--user-id", "42", "--ttl", "10m"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let secret = std::fs::read_to_string(dir.path().join("secret_key")).unwrap();
    let token = stdout(&output);
    let parsed = herald::tokens::validate(&SecretString::from(secret.clone()), &token).unwrap();
    assert_eq!(parsed.user_id, 42);
    let ttl = parsed.exp - chrono::Utc::now().timestamp();
    assert!((590..=600).contains(&ttl), "{ttl}");
    // The next run keeps the same secret.
    let again = herald(dir.path())
        .args(["token", "--user-id", "1"])
        .output()
        .unwrap();
    assert!(herald::tokens::validate(&SecretString::from(secret), &stdout(&again)).is_ok());
}

#[test]
fn token_uses_secret_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .env("SECRET_KEY", "django-secret")
        .args(["token", "--user-id", "5"])
        .output()
        .unwrap();
    let parsed =
        herald::tokens::validate(&SecretString::from("django-secret"), &stdout(&output)).unwrap();
    assert_eq!(parsed.user_id, 5);
    assert!(
        !dir.path().join("secret_key").exists(),
        "no generated key when one is configured"
    );
}

/// Exit status 2 and exactly one line on stderr that names the key.
fn assert_config_error(output: &Output, key: &str) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(key), "names {key}: {err}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_values_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        ("HERALD_LAYER__CAPACITY", "lots", "layer.capacity"),
        ("HERALD_LAYER__CAPACITY", "0", "layer.capacity"),
        (
            "HERALD_TOKENS__ACCESS_TTL",
            "5 parsecs",
            "tokens.access_ttl",
        ),
        ("HERALD_LAYER__BACKEND", "carrier-pigeon", "layer.backend"),
        ("DATABASE_URL", "mysql://localhost/db", "database.url"),
        ("SECRET_KEY", "  ", "secret_key"),
    ];
    for (var, value, key) in cases {
        let output = herald(dir.path())
            .env(var, value)
            .arg("migrate")
            .output()
            .unwrap();
        assert_config_error(&output, key);
    }
}

#[test]
fn bad_config_file_value_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[layer]\ngroup_expiry = \"a day\"\n").unwrap();
    let output = herald(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .output()
        .unwrap();
    assert_config_error(&output, "layer.group_expiry");
    let missing = herald(dir.path())
        .args(["--config", "/nonexistent/herald.toml", "migrate"])
        .output()
        .unwrap();
    assert_config_error(&missing, "--config");
    std::fs::write(&file, "[layer]\ncapacityy = 3\n").unwrap();
    let typo = herald(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .output()
        .unwrap();
    assert_config_error(&typo, "capacityy");
}

#[test]
fn config_file_then_environment_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[tokens]\naccess_ttl = \"2m\"\n").unwrap();
    let secret = "layered-secret";
    let from_file = herald(dir.path())
        .env("SECRET_KEY", secret)
        .arg("--config")
        .arg(&file)
        .args(["token", "--user-id", "1"])
        .output()
        .unwrap();
    let exp = herald::tokens::validate(&SecretString::from(secret), &stdout(&from_file))
        .unwrap()
        .exp;
    assert!((110..=120).contains(&(exp - chrono::Utc::now().timestamp())));
    let from_env = herald(dir.path())
        .env("SECRET_KEY", secret)
        .env("HERALD_TOKENS__ACCESS_TTL", "1h")
        .arg("--config")
        .arg(&file)
        .args(["token", "--user-id", "1"])
        .output()
        .unwrap();
    let exp = herald::tokens::validate(&SecretString::from(secret), &stdout(&from_env))
        .unwrap()
        .exp;
    assert!((3590..=3600).contains(&(exp - chrono::Utc::now().timestamp())));
}

#[test]
fn bad_user_id_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .args(["token", "--user-id", "abc"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn unreachable_database_fails_with_status_1_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("HERALD_DATABASE__ACQUIRE_TIMEOUT", "1s")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("could not open the database"),
        "{}",
        stderr(&output)
    );
}
