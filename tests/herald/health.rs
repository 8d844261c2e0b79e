//! `herald health` against a live `herald run`: ready (0), its Redis
//! channel layer gone (1, naming the 503 and what is not ready), the
//! process gone (1, nothing answers), and bad input (2).

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::cli::herald;
use crate::servers::{RedisServer, free_port};

/// `herald health ARGS` with the listen address `listen` configured.
fn health(dir: &std::path::Path, listen: &str, args: &[&str]) -> Output {
    herald(dir)
        .arg("health")
        .args(args)
        .env("HERALD_SIDECAR__LISTEN", listen)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Waits up to 20 s for `herald health` to pass.
fn until_healthy(dir: &std::path::Path, listen: &str) -> Output {
    let mut last = None;
    for _ in 0..200 {
        let output = health(dir, listen, &[]);
        if output.status.success() {
            return output;
        }
        last = Some(output);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never healthy: {:?}", last.map(|o| text(&o.stderr)));
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn health_is_0_when_ready_and_1_with_the_reason_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let run = Running(
        herald(dir.path())
            .arg("run")
            .env("HERALD_SIDECAR__LISTEN", &listen)
            .env("HERALD_LAYER__BACKEND", "redis")
            .env("REDIS_URL", redis.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Ready: exit 0, one line on stdout naming what answered.
    let ready = until_healthy(dir.path(), &listen);
    assert_eq!(text(&ready.stdout), format!("{listen}/readyz: ready"));
    // A listen address on every interface is probed on loopback, as a
    // container's HEALTHCHECK does with the image's 0.0.0.0:8001.
    let any = health(dir.path(), &format!("0.0.0.0:{port}"), &[]);
    assert!(any.status.success(), "{}", text(&any.stderr));
    assert!(
        health(dir.path(), "127.0.0.1:1", &["--listen", &listen, "--live"])
            .status
            .success()
    );

    // The channel layer gone: the process answers, but is not ready.
    redis.stop();
    let mut not_ready = None;
    for _ in 0..100 {
        let output = health(dir.path(), &listen, &[]);
        if !output.status.success() {
            not_ready = Some(output);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let not_ready = not_ready.expect("not ready once Redis is gone");
    assert_eq!(not_ready.status.code(), Some(1));
    assert_eq!(
        text(&not_ready.stderr),
        format!("herald: {listen}/readyz answered 503: channel layer: unavailable")
    );
    // Alive all the same.
    let live = health(dir.path(), &listen, &["--live"]);
    assert!(live.status.success(), "{}", text(&live.stderr));
    assert_eq!(text(&live.stdout), format!("{listen}/healthz: ok"));

    // The process gone: nothing answers.
    drop(run);
    let down = health(dir.path(), &listen, &[]);
    assert_eq!(down.status.code(), Some(1));
    let said = text(&down.stderr);
    assert!(
        said.starts_with(&format!("herald: nothing answers on {listen}: ")),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
}

#[test]
fn health_refuses_an_address_that_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = health(dir.path(), "127.0.0.1:8001", &["--listen", "localhost"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        text(&bad.stderr),
        "herald: --listen is \"localhost\", not an address such as 127.0.0.1:8001"
    );
    let configured = health(dir.path(), "nowhere", &[]);
    assert_eq!(configured.status.code(), Some(2));
    assert_eq!(
        text(&configured.stderr),
        "herald: configuration error: sidecar.listen: invalid socket address syntax"
    );
    // The worker serves no HTTP unless worker.listen is set.
    let worker = herald(dir.path())
        .args(["health", "--worker"])
        .env("HERALD_WORKER__LISTEN", "")
        .output()
        .unwrap();
    assert_eq!(worker.status.code(), Some(2));
    assert_eq!(
        text(&worker.stderr),
        "herald: worker.listen is empty: this process serves no HTTP"
    );
}
