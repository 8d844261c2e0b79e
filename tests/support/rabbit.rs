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

/// `rabbitmqctl` for the test RabbitMQ's node, with `args`; its stdout.
pub(crate) fn rabbitmqctl(args: &[&str]) -> String {
    let mut command = Command::new("rabbitmqctl");
    if let Ok(node) = std::env::var("HERALD_TEST_RABBITMQ_NODE") {
        command.args(["-n", &node]);
    }
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

    /// `queue`'s messages ready and unacknowledged; (0, 0) when it does
    /// not exist.
    pub(crate) fn counts(&self, queue: &str) -> (u64, u64) {
        self.queues().get(queue).copied().unwrap_or((0, 0))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let mut command = Command::new("rabbitmqctl");
        if let Ok(node) = std::env::var("HERALD_TEST_RABBITMQ_NODE") {
            command.args(["-n", &node]);
        }
        let _ = command.args(["delete_vhost", &self.name]).output();
    }
}
