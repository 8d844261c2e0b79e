//! The servers a run has to itself: a private redis-server (Celery's Redis
//! broker and results, herald's queue, both channel layers), and a virtual
//! host of its own on the machine's RabbitMQ (Celery's AMQP broker), made
//! and deleted with the real `rabbitmqctl`; each is removed on drop. Also
//! the RabbitMQ node's OS pid, for its CPU time.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server of the bench's own, stopped on drop.
pub(crate) struct PrivateRedis(pub(crate) Child);

impl PrivateRedis {
    pub(crate) fn start() -> (PrivateRedis, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (PrivateRedis(child), format!("redis://127.0.0.1:{port}"))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rabbitmqctl ARGS` (the node it reaches: `RABBITMQ_NODENAME`, or the
/// machine's); its stdout.
pub(crate) fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A vhost of the bench's own on RabbitMQ, guest allowed everything;
/// deleted (with its queues) on drop.
pub(crate) struct Vhost {
    pub(crate) name: String,
    /// kombu's URL of the vhost.
    pub(crate) url: String,
    /// The node's OS pid (its beam.smp), for its CPU time.
    pub(crate) pid: Option<u32>,
}

impl Vhost {
    /// A vhost on the RabbitMQ at `base` (`amqp://USER:PASSWORD@HOST:PORT`).
    pub(crate) fn new(base: &str, tag: &str) -> Vhost {
        let name = format!("herald-bench-{tag}");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost {
            url: format!("{}/{name}", base.trim_end_matches('/')),
            name,
            pid: node_pid(),
        }
    }

    /// `queue`'s messages ready and unacknowledged; (0, 0) when it does
    /// not exist.
    pub(crate) fn counts(&self, queue: &str) -> (u64, u64) {
        let out = rabbitmqctl(&[
            "list_queues",
            "-q",
            "-p",
            &self.name,
            "--formatter",
            "json",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap_or_default();
        rows.iter()
            .find(|row| row["name"] == queue)
            .map(|row| {
                let n = |key: &str| row[key].as_u64().unwrap_or(0);
                (n("messages_ready"), n("messages_unacknowledged"))
            })
            .unwrap_or((0, 0))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// The RabbitMQ node's OS pid: as the node says (`os:getpid()`), or the one
/// beam.smp running when the node does not answer.
fn node_pid() -> Option<u32> {
    let said = Command::new("rabbitmqctl")
        .args(["eval", "os:getpid()."])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.trim().trim_matches('"').parse().ok()
        });
    said.or_else(|| {
        let output = Command::new("pgrep")
            .args(["-f", "beam.smp"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() == 1).then(|| pids[0])
    })
}

/// A channel on the vhost for passive declares: how many messages wait in
/// a queue (RabbitMQ's `message_count` counts the ready ones only).
pub(crate) struct Depth(lapin::Channel, lapin::Connection);

impl Depth {
    pub(crate) async fn open(url: &str) -> Depth {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("RabbitMQ answers");
        let channel = connection.create_channel().await.unwrap();
        Depth(channel, connection)
    }

    /// Messages ready in `queue`.
    pub(crate) async fn ready(&self, queue: &str) -> u64 {
        let (ready, _consumers) = herald::ingress::broker::amqp::topology::depth(&self.0, queue)
            .await
            .expect("the filled queue exists");
        u64::from(ready)
    }

    pub(crate) async fn close(self) {
        let _ = self.0.close(200, "bench done".into()).await;
        let _ = self.1.close(200, "bench done".into()).await;
    }
}
