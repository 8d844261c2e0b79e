//! Running the Python peer (`peer.py`) and private Redis servers.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use herald::config::{LayerBackend, LayerSettings, Settings};
use serde_json::{Value, json};

pub(crate) const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python: $HERALD_TEST_PYTHON, or whatever scripts/python-env
/// makes (it installs the pinned requirements on first use).
pub(crate) fn python() -> String {
    if let Ok(python) = std::env::var("HERALD_TEST_PYTHON") {
        return python;
    }
    let output = Command::new(repo().join("scripts/python-env"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/python-env runs");
    assert!(output.status.success(), "scripts/python-env failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .last()
        .expect("python path")
        .trim()
        .to_string()
}

/// A layer configuration shared by both sides.
#[derive(Clone, Debug)]
pub(crate) struct LayerConfig {
    pub(crate) backend: LayerBackend,
    pub(crate) hosts: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) capacity: usize,
    pub(crate) keys: Vec<String>,
}

impl LayerConfig {
    /// Sorted-set layer on the shared Redis with a fresh prefix.
    pub(crate) fn fresh() -> Self {
        Self {
            backend: LayerBackend::Redis,
            hosts: vec![SHARED_REDIS.into()],
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            capacity: 100,
            keys: vec![],
        }
    }

    pub(crate) fn settings(&self) -> LayerSettings {
        let mut layer = Settings::defaults().layer;
        layer.backend = self.backend;
        layer.hosts = self.hosts.clone();
        layer.prefix = self.prefix.clone();
        layer.capacity = self.capacity;
        layer.symmetric_encryption_keys = self.keys.iter().map(|k| k.clone().into()).collect();
        layer
    }

    pub(crate) fn json(&self) -> String {
        let backend = match self.backend {
            LayerBackend::RedisPubsub => "pubsub",
            _ => "redis",
        };
        json!({
            "backend": backend,
            "hosts": self.hosts,
            "prefix": self.prefix,
            "capacity": self.capacity,
            "symmetric_encryption_keys": self.keys,
        })
        .to_string()
    }
}

/// A running `peer.py` command whose JSON lines can be read one by one.
pub(crate) struct Peer {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Peer {
    /// Starts `peer.py command --layer ... args`, writing `stdin_lines`
    /// (JSON values, one a line) to its standard input.
    pub(crate) fn start(
        command: &str,
        layer: &LayerConfig,
        args: &[&str],
        stdin_lines: &[Value],
    ) -> Peer {
        let mut child = Command::new(python())
            .arg(repo().join("tests/interop/peer.py"))
            .arg(command)
            .arg("--layer")
            .arg(layer.json())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python peer starts");
        let mut stdin = child.stdin.take().unwrap();
        for line in stdin_lines {
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// The next line, waiting up to 30 s.
    pub(crate) fn next(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the python peer answered in time")
    }

    /// Reads one line per expected message: each event must equal it, with
    /// the same Python types.
    pub(crate) fn expect_events(&self, expected: &[Value]) {
        for message in expected {
            let line = self.next();
            assert_eq!(&line["event"], message);
            assert_eq!(line["types"], type_sig(message));
        }
    }

    /// Waits for the peer to exit successfully.
    pub(crate) fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "python peer failed: {status}");
    }

    /// Runs a command to its end and returns every line it printed.
    pub(crate) fn run(
        command: &str,
        layer: &LayerConfig,
        args: &[&str],
        stdin_lines: &[Value],
    ) -> Vec<Value> {
        let peer = Peer::start(command, layer, args, stdin_lines);
        let lines: Vec<Value> = peer.lines.iter().collect();
        let mut peer = peer;
        let status = peer.child.wait().unwrap();
        assert!(status.success(), "python peer {command} failed: {status}");
        lines
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python type signature of a JSON value, as peer.py's `type_sig`.
pub(crate) fn type_sig(value: &Value) -> Value {
    match value {
        Value::Bool(_) => json!("bool"),
        Value::Number(n) if n.is_f64() => json!("float"),
        Value::Number(_) => json!("int"),
        Value::String(_) => json!("str"),
        Value::Null => json!("null"),
        Value::Array(items) => Value::Array(items.iter().map(type_sig).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), type_sig(v))).collect())
        }
    }
}

pub(crate) use crate::servers::RedisServer;

/// A plain Redis connection for inspecting keys.
pub(crate) async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Logs from herald when RUST_LOG is set (shown for failing tests).
pub(crate) fn init_tracing() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A migrated SQLite store in a temporary directory (kept alive by the
/// returned guard).
pub(crate) async fn sqlite_store() -> (herald::store::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.sqlite3").display());
    let options = herald::store::PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
    };
    let store = herald::store::Store::connect(&url, options).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// The URL of a fresh, empty PostgreSQL database (named `herald_t_*`, so
/// the test command drops it afterwards).
pub(crate) async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must answer at HERALD_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').expect("url with a database").0;
    format!("{base}/{name}")
}
