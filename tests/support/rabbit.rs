//! RabbitMQ for the tests: a virtual host of a test's own on the test
//! RabbitMQ (the machine's, or the private node the test command starts when
//! that one is down: `HERALD_TEST_AMQP_URL`, `HERALD_TEST_RABBITMQ_NODE`),
//! read and made with the real `rabbitmqctl`, and deleted on drop.
#![allow(dead_code)]

use std::process::Command;

/// The test RabbitMQ's URL, without a vhost.
pub(crate) fn amqp_base() -> String {
    std::env::var("HERALD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
        .trim_end_matches('/')
        .to_string()
}

/// `rabbitmqctl` for the test RabbitMQ's node: Debian's (which runs as
/// the rabbitmq user, with its cookie) for the machine's node, the plain
/// one with the node's own cookie (`HERALD_TEST_RABBITMQ_HOME`) for a
/// private node the test command started.
fn ctl() -> Command {
    let mut command = match std::env::var("HERALD_TEST_RABBITMQ_HOME") {
        Ok(home) => {
            let mut command = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
            command.env("HOME", home);
            command
        }
        Err(_) => Command::new("rabbitmqctl"),
    };
    if let Ok(node) = std::env::var("HERALD_TEST_RABBITMQ_NODE") {
        command.args(["-n", &node]);
    }
    command
}

/// `rabbitmqctl` for the test RabbitMQ's node, with `args`; its stdout.
pub(crate) fn rabbitmqctl(args: &[&str]) -> String {
    let mut command = ctl();
    let output = command.args(args).output().expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A vhost of the test's own, guest allowed everything; deleted on drop.
pub(crate) struct Vhost {
    pub(crate) name: String,
}

impl Vhost {
    pub(crate) fn new() -> Vhost {
        let name = format!(
            "herald-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost { name }
    }

    /// kombu's URL of this vhost.
    pub(crate) fn url(&self) -> String {
        format!("{}/{}", amqp_base(), self.name)
    }

    /// Each queue's messages ready and unacknowledged, by name.
    pub(crate) fn queues(&self) -> std::collections::HashMap<String, (u64, u64)> {
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
            .map(|row| {
                let n = |key: &str| row[key].as_u64().unwrap_or(0);
                let name = row["name"].as_str().unwrap_or_default().to_string();
                (name, (n("messages_ready"), n("messages_unacknowledged")))
            })
            .collect()
    }

    /// The names of this vhost's exchanges.
    pub(crate) fn exchanges(&self) -> Vec<String> {
        let out = rabbitmqctl(&["list_exchanges", "-q", "-p", &self.name, "name"]);
        out.lines().map(|line| line.trim().to_string()).collect()
    }

    /// `queue`'s messages ready and unacknowledged; (0, 0) when it does
    /// not exist.
    pub(crate) fn counts(&self, queue: &str) -> (u64, u64) {
        self.queues().get(queue).copied().unwrap_or((0, 0))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = ctl().args(["delete_vhost", &self.name]).output();
    }
}

/// A RabbitMQ node of the test's own (the real `rabbitmq-server`, its own
/// node name, ports, cookie and data directory), for what must not touch
/// the machine's: a short `consumer_timeout`, restarts. Killed on drop.
pub(crate) struct RabbitNode {
    pub(crate) port: u16,
    dist_port: u16,
    pub(crate) name: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RabbitNode {
    /// Starts a node with `conf` added to its rabbitmq.conf and `advanced`
    /// (Erlang terms for the `rabbit` application, may be empty) in its
    /// advanced.config; waits until it takes connections.
    pub(crate) fn start(conf: &str, advanced: &str) -> RabbitNode {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let port = crate::servers::free_port();
        let dist_port = crate::servers::free_port();
        let name = format!(
            "herald-{}@localhost",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n{conf}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("advanced.config"),
            format!("[{{rabbit, [{advanced}]}}].\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let cookie = dir.path().join(".erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string()).unwrap();
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        let mut node = RabbitNode {
            port,
            dist_port,
            name,
            dir,
            child: None,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("server.out")).unwrap();
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .current_dir(dir)
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        self.child = Some(child);
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the private RabbitMQ node on {} did not come up", self.port);
    }

    /// kombu's URL of the node's `/` vhost.
    pub(crate) fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.port)
    }

    /// What the node logged so far.
    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("log"))
            .into_iter()
            .flatten()
        {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
        text
    }

    /// The node's own `rabbitmqctl` with `args` (its cookie); its stdout.
    pub(crate) fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .env("HOME", self.dir.path())
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the node as an operator would (`rabbitmqctl stop`: durable
    /// queues and persistent messages kept) and starts it again on the same
    /// ports and data.
    pub(crate) fn restart(&mut self) {
        self.ctl(&["stop"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.launch();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.kill();
    }
}
