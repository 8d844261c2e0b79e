//! The binary: `migrate` twice on both databases, `token`, and bad
//! configuration giving exit status 2 with one line naming the key.

use std::process::{Command, Output};

use herald::store::Backend;

use crate::helpers::http;
use secrecy::SecretString;

/// The herald binary with none of the environment's database, secret or
/// Redis, and its data in `data_dir`.
pub(crate) fn herald(data_dir: &std::path::Path) -> Command {
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
    // Every migration of the backend's directory, applied once.
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let shipped = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder),
    )
    .unwrap()
    .filter(|entry| {
        let entry = entry.as_ref().unwrap();
        entry.path().extension().is_some_and(|ext| ext == "sql")
    })
    .count();
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains(&format!("applied {shipped} migration")),
        "{shipped} migrations shipped: {}",
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

/// A `HERALD_*` variable set for the application (a shared env file) is
/// not a setting: one warning naming it, and herald runs.
#[test]
fn unknown_herald_variables_warn_and_do_not_stop_herald() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .env("HERALD_API_URL", "http://127.0.0.1:8001")
        .env("HERALD_WORKER__NO_SUCH_KEY", "1")
        .args(["token", "--user-id", "7"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let warnings: Vec<String> = stderr(&output)
        .lines()
        .filter(|line| line.contains("WARN"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("HERALD_API_URL, HERALD_WORKER__NO_SUCH_KEY"));
    assert!(!stdout(&output).is_empty(), "the token is printed");
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

/// Runs `herald <args>` on an embedded data dir.
fn run_in(dir: &std::path::Path, args: &[&str]) -> Output {
    herald(dir).args(args).output().unwrap()
}

#[test]
fn enqueue_prints_the_job_and_refuses_bad_input_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run_in(dir.path(), &["migrate"]).status.success());
    let payload = r#"{"user_id": 4, "title": "t", "message": "m", "notification_type": "info"}"#;
    let queued = run_in(
        dir.path(),
        &["enqueue", "notify", payload, "--dedup-key", "k1"],
    );
    assert!(queued.status.success(), "{}", stderr(&queued));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&queued)).unwrap();
    assert_eq!(
        (answer["state"].as_str(), answer["existing"].as_bool()),
        (Some("queued"), Some(false))
    );
    let again = run_in(
        dir.path(),
        &["enqueue", "notify", payload, "--dedup-key", "k1"],
    );
    let again: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(
        (&again["id"], again["existing"].as_bool()),
        (&answer["id"], Some(true))
    );

    for (args, expected) in [
        (
            vec!["enqueue", "fax", "{}"],
            "known kinds: deadline_reminder",
        ),
        (
            vec!["enqueue", "notify", "{not json"],
            "payload is not valid JSON",
        ),
        (
            vec!["enqueue", "notify", r#"{"user_id": "x"}"#],
            "payload field `user_id`",
        ),
        (
            vec!["enqueue", "notify", payload, "--run-at", "tomorrow"],
            "--run-at",
        ),
    ] {
        let refused = run_in(dir.path(), &args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(expected),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
}

#[tokio::test]
async fn enqueue_file_checks_every_line_before_queueing_any() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run_in(dir.path(), &["migrate"]).status.success());
    let url = format!("sqlite://{}", dir.path().join("herald.sqlite3").display());
    let options = herald::store::PoolOptions {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = herald::store::Store::connect(&url, options).await.unwrap();
    let queued = || store.count_jobs(herald::store::JobState::Queued);
    let job = |user: i64| {
        format!(
            r#"{{"kind": "notify", "payload": {{"user_id": {user}, "title": "t", "message": "m", "notification_type": "info"}}}}"#
        )
    };
    let file = dir.path().join("jobs.ndjson");
    let path = file.to_str().unwrap();
    let bad = r#"{"kind": "notify", "payload": {"user_id": "x"}}"#;
    for (text, expected) in [
        (
            format!("{}\n\n{}\n{bad}\n", job(1), job(2)),
            "line 4: payload field `user_id`",
        ),
        (format!("{}\nnot json\n", job(1)), "line 2: not a job"),
        ("\n".to_string(), "no jobs in it"),
    ] {
        std::fs::write(&file, text).unwrap();
        let refused = run_in(dir.path(), &["enqueue", "--file", path]);
        assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        assert!(stderr(&refused).contains(expected), "{}", stderr(&refused));
    }
    assert_eq!(queued().await.unwrap(), 0, "a bad file queues nothing");

    let many: Vec<String> = (1..=1500).map(job).collect();
    std::fs::write(&file, many.join("\n")).unwrap();
    let done = run_in(dir.path(), &["enqueue", "--file", path]);
    assert!(done.status.success(), "{}", stderr(&done));
    let answers: Vec<serde_json::Value> = stdout(&done)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), 1500, "one answer per job, over two batches");
    assert!(
        answers
            .iter()
            .all(|a| a["existing"] == false && a["state"] == "queued")
    );
    let ids: std::collections::HashSet<_> = answers.iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids.len(), 1500);
    assert_eq!(queued().await.unwrap(), 1500);

    let both = run_in(dir.path(), &["enqueue", "notify", "{}", "--file", path]);
    assert_eq!(both.status.code(), Some(2), "--file stands alone");
}

#[tokio::test]
async fn jobs_failed_lists_dead_jobs_and_retry_queues_them_again() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run_in(dir.path(), &["migrate"]).status.success());
    let payload = r#"{"task_id": 77, "file_id": 1, "file_name": "a", "uploaded_by": 2}"#;
    let queued = run_in(dir.path(), &["enqueue", "file_attached", payload]);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&queued)).unwrap();
    let id = answer["id"].as_str().unwrap();
    // Mark it dead as the worker would after its last attempt.
    let url = format!("sqlite://{}", dir.path().join("herald.sqlite3").display());
    let options = herald::store::PoolOptions {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = herald::store::Store::connect(&url, options).await.unwrap();
    store
        .record_failed_attempt(
            id,
            herald::store::JobState::Dead,
            Some("task 77 does not exist"),
            None,
        )
        .await
        .unwrap();
    let failed = run_in(dir.path(), &["jobs", "failed"]);
    assert!(failed.status.success(), "{}", stderr(&failed));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&failed)).unwrap();
    assert_eq!(
        (listed["id"].as_str(), listed["last_error"].as_str()),
        (Some(id), Some("task 77 does not exist"))
    );
    let retried = run_in(dir.path(), &["jobs", "retry", id]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    let job = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (herald::store::JobState::Queued, 0)
    );
    assert_eq!(stdout(&run_in(dir.path(), &["jobs", "failed"])), "");
    let again = run_in(dir.path(), &["jobs", "retry", id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("not dead"), "{}", stderr(&again));
    let unknown = run_in(dir.path(), &["jobs", "retry", "NOPE"]);
    assert_eq!(
        (
            unknown.status.code(),
            stderr(&unknown).contains("no job NOPE")
        ),
        (Some(2), true)
    );
}

#[tokio::test]
async fn run_serves_jobs_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = herald(dir.path())
        .args(["run", "--dev"])
        .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = r#"{"kind": "notify", "payload": {"user_id": 4, "title": "t", "message": "m", "notification_type": "info"}}"#;
    let mut answer = None;
    for _ in 0..200 {
        if let Ok(reply) = http(addr, "POST", "/api/jobs", &[], body.as_bytes()).await {
            answer = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, accepted) = answer.expect("herald run answers");
    assert_eq!(status, 202, "{accepted}");
    let path = format!("/api/jobs/{}", accepted["id"].as_str().unwrap());
    let mut state = serde_json::Value::Null;
    for _ in 0..200 {
        state = http(addr, "GET", &path, &[], b"").await.unwrap().1["state"].clone();
        if state == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "done");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = exited.expect("herald run exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}
