//! The test harness: fresh databases per test, fixtures, log capture.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herald::store::{Backend, PoolOptions, Store};
use sqlx::Connection;

/// PostgreSQL server where each test creates its own database.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated store on a database of its own, dropped with the value's
/// temporary directory (SQLite) or left for the test command to drop
/// (PostgreSQL databases named `herald_t_*`).
pub(crate) struct TestStore {
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn fresh_database_url(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("herald.sqlite3").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL must answer at HERALD_TEST_POSTGRES_URL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create database");
            let base = admin.rsplit_once('/').expect("url with a database").0;
            (format!("{base}/{name}"), None)
        }
    }
}

pub(crate) async fn fresh_store(backend: Backend) -> TestStore {
    fresh_store_at(backend).await.0
}

/// [`fresh_store`] and its URL, for configuring a herald process on it.
pub(crate) async fn fresh_store_at(backend: Backend) -> (TestStore, String) {
    let (url, dir) = fresh_database_url(backend).await;
    let options = PoolOptions {
        max_connections: 10,
        acquire_timeout: std::time::Duration::from_secs(30),
    };
    let store = Store::connect(&url, options).await.expect("connect");
    store.migrate().await.expect("migrate");
    (TestStore { store, _dir: dir }, url)
}

/// Declares `mod $name { sqlite, postgres }`, each running `$body(TestStore)`.
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            use herald::store::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body(crate::helpers::fresh_store(Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body(crate::helpers::fresh_store(Backend::Postgres).await).await
            }
        }
    };
}
pub(crate) use on_both_databases;

pub(crate) fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A writer that keeps what tracing writes, for asserting on log lines.
#[derive(Clone, Default)]
pub(crate) struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A request's head, `Connection: close`: `headers` as given, a `Host`
/// unless they have one, the body's length.
pub(crate) fn request_head(method: &str, path: &str, headers: &[&str], length: usize) -> String {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {length}\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        request.push_str("Host: 127.0.0.1\r\n");
    }
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// A one-shot HTTP/1.1 request: the status and the JSON body (`Null` when
/// the body is not JSON).
pub(crate) async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let headers = [&["Content-Type: application/json"], headers].concat();
    let request = request_head(method, path, &headers, body.len());
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    Ok((status, json))
}
