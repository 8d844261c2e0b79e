//! The processes the browser test runs: `herald run` (and a `herald
//! worker`) sharing a fresh PostgreSQL database, the test Redis as channel
//! layer, queue and Celery broker, and the dashboard's key.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::KEY;

/// Where the processes share their state.
pub(super) struct Fleet {
    pub(super) database: String,
    pub(super) data: tempfile::TempDir,
    pub(super) prefix: String,
    pub(super) port: u16,
}

impl Fleet {
    pub(super) fn herald(&self, role: &str) -> Command {
        let redis = std::env::var("HERALD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg(role)
            .env("DATABASE_URL", &self.database)
            .env("SECRET_KEY", "browser-dashboard-secret")
            .env("REDIS_URL", &redis)
            .env("HERALD_DATA_DIR", self.data.path())
            .env("HERALD_API__KEY", KEY)
            .env("HERALD_LAYER__BACKEND", "redis")
            .env("HERALD_LAYER__PREFIX", &self.prefix)
            .env("HERALD_QUEUE__PREFIX", &self.prefix)
            .env("HERALD_QUEUE__POLL_INTERVAL", "20ms")
            .env("HERALD_QUEUE__RETRY_BASE", "100ms")
            .env("HERALD_QUEUE__RETRY_MAX", "200ms")
            .env("HERALD_QUEUE__ATTEMPTS__FILE_ATTACHED", "2")
            .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{}", self.port))
            // Celery's ingress on an empty queue of the test Redis, so the
            // page shows the broker.
            .env("CELERY_BROKER_URL", format!("{redis}/0"))
            .env(
                "HERALD_CELERY__QUEUES",
                format!("[\"{}-celery\"]", self.prefix),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        command
    }

    pub(super) fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

/// A free port now (it may be taken again before herald binds it).
pub(super) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// `herald run` once it answers on the fleet's port; `None` if it exited
/// first (another test took the port).
pub(super) async fn run(fleet: &Fleet) -> Option<Child> {
    let mut child = fleet.herald("run").spawn().unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if tokio::net::TcpStream::connect(fleet.addr()).await.is_ok() {
            return Some(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("herald run never answered on port {}", fleet.port);
}

pub(super) fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}
