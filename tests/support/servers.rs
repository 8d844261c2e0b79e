//! Servers a test owns: a redis-server and a PostgreSQL cluster on free
//! ports, to stop and start under herald without disturbing other tests.
//! Included by several test binaries with `#[path]`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts on `port`.
fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} on port {port} did not come up");
}

/// A redis-server of the test's own on a free port, killed on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Keeps its data across [`RedisServer::stop`] (append-only file).
    persistent: bool,
}

impl RedisServer {
    /// A server that keeps nothing: a restart empties it.
    pub(crate) fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// A server that keeps its data across a restart, as a production
    /// Redis with an append-only file does.
    pub(crate) fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            persistent,
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.launch();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port.
    pub(crate) fn start_again(&mut self) {
        self.launch();
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.persistent { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// Kills the server (its data is gone: it keeps nothing) and starts a
    /// new one on the same port.
    pub(crate) fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(300));
        self.launch();
    }

    /// Stops the server (a persistent one shuts down cleanly, keeping its
    /// data); [`RedisServer::start_again`] brings it back.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.persistent {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster of the test's own (trust auth, fsync off), run as
/// the `postgres` user when the test runs as root; stopped on drop.
pub(crate) struct PostgresServer {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args` as the postgres user when root (PostgreSQL refuses root).
fn as_postgres(program: PathBuf) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub(crate) fn start() -> PostgresServer {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory");
        }
        let status = as_postgres(postgres_bin("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb");
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.start_again();
        server
    }

    /// postgres://postgres@127.0.0.1:PORT/postgres
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port and data directory.
    pub(crate) fn start_again(&mut self) {
        let child = as_postgres(postgres_bin("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .arg("-k")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        wait_for_port(self.port, "postgres");
        // Accepting TCP precedes accepting queries by a moment.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Fast shutdown (SIGINT): sessions are cut, as in a restart.
    pub(crate) fn stop(&mut self) {
        // The postmaster's pid (the child may be runuser in front of it).
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Some(mut child) = self.child.take() {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.lines().next().map(str::to_string))
                .unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = child.wait();
            for _ in 0..200 {
                if !pid_file.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
