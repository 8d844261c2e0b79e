//! The JavaScript client (clients/herald-notifications.js) in Node's
//! browser-compatible WebSocket: token as subprotocol (so the echo rule is
//! checked as a browser checks it), reconnect with backoff after the sidecar
//! restarts (refused attempts included), resume from the last id, each
//! notification exactly once.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::harness::{WAIT, spawn, token};

struct Node {
    child: tokio::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
    notifications: Vec<i64>,
}

impl Node {
    /// Reads lines until one satisfies `want`, recording notification ids.
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap()
                .unwrap_or_else(|| panic!("node exited before {what}"));
            eprintln!("node: {line}");
            let value: Value = serde_json::from_str(&line).unwrap();
            if let Some(id) = value["notification"]["id"].as_i64() {
                self.notifications.push(id);
            }
            if want(&value) {
                return;
            }
        }
    }
}

impl Node {
    /// Tells the script to stop the client; it must exit cleanly.
    async fn stop(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"stop\n").await.unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }

    /// The client of tests/sidecar/js_client.mjs for `user`, from `last_id`.
    fn start(url: String, user: i64, last_id: Option<i64>) -> Node {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sidecar/js_client.mjs");
        let mut child = tokio::process::Command::new("node")
            .arg("--experimental-websocket")
            .arg("--no-warnings")
            .arg(script)
            .arg(url)
            .arg(token(user, Duration::from_secs(300)))
            .args(last_id.map(|id| id.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (>= 20) runs; the test command installs it");
        let stdout = child.stdout.take().unwrap();
        Node {
            child,
            lines: BufReader::new(stdout).lines(),
            notifications: Vec::new(),
        }
    }
}

/// A resume herald cannot vouch for (`recovered: false`: the position's row
/// is not the user's) reaches the application through `onGap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_reports_a_resume_herald_could_not_vouch_for() {
    let sidecar = spawn(|_| {}).await;
    let other = sidecar.notification(99, "someone else's").await;
    let mut node = Node::start(sidecar.url(""), 32, Some(other.id));
    node.until("the gap", |v| v["gap"]["recovered"] == false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_gets_what_it_missed_while_the_sidecar_was_down_exactly_once() {
    let mut sidecar = spawn(|_| {}).await;
    let user = 31;
    let mut node = Node::start(sidecar.url(""), user, None);
    node.until("open", |v| v["status"] == "open").await;
    // Live: publish until it arrives (the connection joins its group just
    // after the handshake); the client shows it once however many copies.
    let first = sidecar.notification(user, "first").await;
    let mut got_first = false;
    for _ in 0..50 {
        sidecar.publish(&first).await;
        let wait = tokio::time::timeout(Duration::from_millis(200), async {
            node.until("first", |v| v["notification"]["id"] == first.id)
                .await
        });
        if wait.await.is_ok() {
            got_first = true;
            break;
        }
    }
    assert!(got_first, "the first notification arrived");
    // The sidecar stops (1001); a notification is created while it is down.
    sidecar.shutdown().await;
    node.until("closed", |v| v["status"] == "closed" && v["code"] == 1001)
        .await;
    let missed = sidecar.notification(user, "missed").await;
    sidecar.publish(&missed).await;
    // A reconnect is refused while the sidecar is down, and the client
    // tries again (Node's WebSocket reports that with "error" alone).
    node.until("a refused reconnect", |v| {
        v["status"] == "reconnecting" && v["attempt"].as_i64() >= Some(2)
    })
    .await;
    sidecar.start_again().await;
    node.until("the missed one", |v| v["notification"]["id"] == missed.id)
        .await;
    // Live copies of both again, then a new one: shown once each.
    sidecar.publish(&first).await;
    sidecar.publish(&missed).await;
    let last = sidecar.notification(user, "last").await;
    sidecar.publish(&last).await;
    node.until("the last one", |v| v["notification"]["id"] == last.id)
        .await;
    assert_eq!(node.notifications, vec![first.id, missed.id, last.id]);
    node.stop().await;
}

/// The close the sidecar sends when it cannot join the user's group (1011
/// "layer_unavailable", after about three seconds of tries): the client
/// reconnects with backoff and resumes from its last id, so a notification
/// created while its socket was outside the group reaches it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_resumes_after_the_sidecar_could_not_join_its_group() {
    let layer = crate::group_add::FlakyJoins::new(usize::MAX);
    let sidecar = crate::group_add::sidecar_on(layer.clone()).await;
    let user = 33;
    let seen = sidecar.notification(user, "seen before").await;
    let mut node = Node::start(sidecar.url(""), user, Some(seen.id));
    node.until("the close", |v| {
        v["status"] == "closed" && v["code"] == 1011 && v["reason"] == "layer_unavailable"
    })
    .await;
    // Published while no socket of the user is in the group: heard by none.
    let missed = sidecar.notification(user, "missed").await;
    sidecar.publish(&missed).await;
    layer.heal();
    node.until("the missed one", |v| v["notification"]["id"] == missed.id)
        .await;
    node.until("the end of the replay", |v| v["event"] == "resumed")
        .await;
    // In its group now: live again.
    let live = sidecar.notification(user, "live").await;
    sidecar.publish(&live).await;
    node.until("the live one", |v| v["notification"]["id"] == live.id)
        .await;
    assert_eq!(node.notifications, vec![missed.id, live.id]);
    node.stop().await;
}
