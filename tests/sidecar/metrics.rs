//! `/metrics` (Prometheus text) and `/healthz` on the sidecar's router.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{connect, expired_token, spawn};

/// A bare HTTP/1.1 GET; returns the whole response.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    response
}

#[tokio::test]
async fn metrics_count_connections_and_failures_by_reason() {
    let sidecar = spawn(|_| {}).await;
    let _client = sidecar.client(1).await;
    let mut refused = connect(&sidecar.url(""), &[&expired_token(1)], None).await;
    assert_eq!(refused.closed().await.0, 4001);
    let row = sidecar.notification(1, "counted").await;
    sidecar.publish(&row).await;
    sidecar
        .until("delivered", |s| s.metrics().events_delivered == 1)
        .await;
    let text = get(sidecar.addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "herald_sidecar_connections_open 1",
        "herald_sidecar_connections_accepted_total 1",
        "herald_sidecar_events_delivered_total 1",
        "herald_sidecar_auth_failures_total{reason=\"expired\"} 1",
        "herald_sidecar_slow_client_disconnects_total 0",
        "herald_sidecar_notifications_replayed_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(get(sidecar.addr, "/healthz").await.ends_with("ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_checks_the_database_and_the_layer() {
    let sidecar = spawn(|_| {}).await;
    let ready = get(sidecar.addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // A Redis layer nobody answers for: not ready, and says why.
    let mut layer = herald::config::Settings::defaults().layer;
    layer.backend = herald::config::LayerBackend::Redis;
    layer.hosts = vec!["redis://127.0.0.1:1".into()];
    let layer = herald::layer::build(&layer).unwrap();
    let db = crate::helpers::fresh_store(herald::store::Backend::Sqlite).await;
    let down = crate::harness::spawn_with(layer, db, |_| {}).await;
    let answer = get(down.addr, "/readyz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(
        body, "channel layer: unavailable\n",
        "what is down, no error text"
    );
}
