//! `herald sidecar`, the binary: refuses the in-memory layer with exit
//! status 2, and on SIGTERM closes its clients with 1001 and exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{SECRET, connect, token};

fn herald(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("SECRET_KEY", SECRET)
        .env("HERALD_DATA_DIR", data_dir);
    command
}

#[test]
fn refuses_the_memory_layer() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .env("HERALD_LAYER__BACKEND", "memory")
        .arg("sidecar")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("configuration error: layer.backend"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_until_sigterm_then_closes_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut child = herald(dir.path())
        .env("HERALD_LAYER__BACKEND", "redis")
        .env("HERALD_LAYER__PREFIX", &prefix)
        .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
        .arg("sidecar")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "herald sidecar did not listen on {port}");
    let url = format!("ws://127.0.0.1:{port}/ws/notifications/");
    let mut client = connect(&url, &[&token(1, Duration::from_secs(60))], None).await;
    client.ping().await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.closed().await, (1001, "server_shutdown".to_string()));
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
}
