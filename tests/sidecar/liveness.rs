//! Liveness: token expiry mid-connection (4003) unless refreshed, dead
//! peers dropped after unanswered pings (4002), slow clients disconnected
//! (4008) with bounded memory, and close 1001 for everyone on shutdown.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Next, as_event, connect, spawn, token};

#[tokio::test]
async fn an_expiring_token_ends_the_stream_with_4003() {
    let sidecar = spawn(|_| {}).await;
    let mut client = connect(&sidecar.url(""), &[&token(1, Duration::from_secs(2))], None).await;
    client.ping().await;
    let started = std::time::Instant::now();
    assert_eq!(client.closed().await, (4003, "token_expired".to_string()));
    assert!(started.elapsed() <= Duration::from_secs(3));
    assert_eq!(sidecar.state.metrics().token_expiries, 1);
}

#[tokio::test]
async fn a_refresh_moves_the_expiry() {
    let sidecar = spawn(|_| {}).await;
    let mut client = connect(&sidecar.url(""), &[&token(1, Duration::from_secs(2))], None).await;
    let fresh = token(1, Duration::from_secs(60));
    client
        .send(json!({"type": "refresh", "token": fresh}))
        .await;
    let answer = client.json().await;
    assert_eq!(answer["type"], "refreshed");
    assert!(answer["data"]["exp"].as_i64().unwrap() > crate::harness::now() + 30);
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.ping().await;
    let row = sidecar.notification(1, "still here").await;
    sidecar.publish(&row).await;
    assert_eq!(client.json().await, as_event(&row));
}

#[tokio::test]
async fn a_refresh_for_another_user_or_invalid_is_refused() {
    let sidecar = spawn(|_| {}).await;
    let mut client = connect(&sidecar.url(""), &[&token(1, Duration::from_secs(2))], None).await;
    client
        .send(json!({"type": "refresh", "token": token(2, Duration::from_secs(60))}))
        .await;
    let error = client.json().await;
    assert_eq!(
        error,
        json!({"type": "error", "data": {"message": "refresh refused: the token is for another user"}})
    );
    client
        .send(json!({"type": "refresh", "token": crate::harness::expired_token(1)}))
        .await;
    assert_eq!(
        client.json().await["data"]["message"],
        "refresh refused: token has expired"
    );
    assert_eq!(client.closed().await.0, 4003);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let sidecar = spawn(|s| {
        s.ping_interval = Duration::from_millis(200);
        s.ping_timeout = Duration::from_millis(200);
    })
    .await;
    // A client that reads answers pings (tungstenite replies for it).
    let mut alive = sidecar.client(1).await;
    // A client that never reads never answers.
    let _dead = sidecar.client(2).await;
    alive.silent(Duration::from_millis(1500)).await;
    sidecar
        .until("the dead peer dropped", |s| s.metrics().ping_timeouts == 1)
        .await;
    sidecar
        .until("one connection left", |s| s.open_connections() == 1)
        .await;
    alive.ping().await;
}

#[tokio::test]
async fn a_slow_client_is_disconnected_with_4008() {
    let sidecar = spawn(|s| {
        s.queue_size = 4;
        s.write_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = sidecar.client(1).await;
    let mut fast = sidecar.client(2).await;
    // 64 KiB messages: the socket buffers fill long before 300 of them.
    let pad = "z".repeat(64 * 1024);
    let mut sent = 0;
    for i in 0..300 {
        if sidecar.state.metrics().slow_client_disconnects == 1 {
            break;
        }
        sidecar
            .group_send(
                1,
                json!({"type": "send_notification", "data": {"id": i, "pad": pad}}),
            )
            .await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sidecar
        .until("the slow client is cut off", |s| {
            s.metrics().slow_client_disconnects == 1 && s.open_connections() == 1
        })
        .await;
    // The fast one is untouched.
    let row = sidecar.notification(2, "fast").await;
    sidecar.publish(&row).await;
    assert_eq!(fast.json().await, as_event(&row));
    // The slow one got a part, then the end of the stream.
    let mut received = 0;
    let ending = loop {
        match slow.read(Duration::from_secs(5)).await {
            Next::Json(_) => received += 1,
            other => break other,
        }
    };
    eprintln!("slow client: received {received} of {sent}, then {ending:?}");
    assert!(received < sent, "received {received} of {sent}");
    assert!(
        matches!(ending, Next::Close(4008, _) | Next::Gone),
        "ended with {ending:?}"
    );
}

#[tokio::test]
async fn shutdown_closes_everyone_with_1001() {
    let mut sidecar = spawn(|_| {}).await;
    let mut a = sidecar.client(1).await;
    let mut b = sidecar.client(2).await;
    let url = sidecar.url("");
    let (closed_a, closed_b, ()) = tokio::join!(a.closed(), b.closed(), sidecar.shutdown());
    assert_eq!(closed_a, (1001, "server_shutdown".to_string()));
    assert_eq!(closed_b.0, 1001);
    assert_eq!(sidecar.state.open_connections(), 0);
    let refused =
        crate::harness::try_connect(&url, &[&token(1, Duration::from_secs(60))], None).await;
    assert!(refused.is_err(), "no new connections after shutdown");
}
