//! Connection limits: the process total (1013) and per user (4029), each
//! answered with its close code while other clients carry on.

use std::time::Duration;

use crate::harness::{connect, spawn, token};

#[tokio::test]
async fn total_and_per_user_limits() {
    let sidecar = spawn(|s| {
        s.max_connections = 3;
        s.max_connections_per_user = 2;
    })
    .await;
    let url = sidecar.url("");
    let mut a1 = sidecar.client(1).await;
    let _a2 = sidecar.client(1).await;
    let mut a3 = connect(&url, &[&token(1, Duration::from_secs(60))], None).await;
    assert_eq!(
        a3.closed().await,
        (4029, "too_many_connections".to_string())
    );
    let _b1 = sidecar.client(2).await;
    let mut b2 = connect(&url, &[&token(2, Duration::from_secs(60))], None).await;
    assert_eq!(b2.closed().await, (1013, "server_full".to_string()));
    a1.ping().await;
    assert_eq!(sidecar.state.metrics().connections_refused, 2);
    drop(a1);
    sidecar
        .until("a place is free", |s| s.open_connections() == 2)
        .await;
    let mut b3 = sidecar.client(2).await;
    b3.ping().await;
}

/// A raw TCP client of the sidecar.
async fn tcp(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (or `wait` passes).
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let read = tokio::time::timeout(wait, stream.read_to_end(&mut all)).await;
    read.ok().map(|_| all)
}

/// Before authentication nothing is held for long: unfinished headers are
/// cut off after `header_timeout`, connections past
/// `max_pending_connections` are closed at once, and shutdown is not held
/// up by either.
#[tokio::test]
async fn unauthenticated_clients_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let mut sidecar = spawn(|s| {
        s.header_timeout = Duration::from_millis(400);
        s.max_pending_connections = 4;
    })
    .await;
    let mut slow = tcp(sidecar.addr).await;
    slow.write_all(b"GET /ws/notifications/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tcp(sidecar.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tcp(sidecar.addr).await;
    let refused = closed_within(&mut extra, Duration::from_millis(300)).await;
    assert_eq!(refused, Some(Vec::new()), "closed at once, unanswered");
    let started = std::time::Instant::now();
    sidecar.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Reads an answer's head (status line and headers), at most 5 s.
async fn head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while !all.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        if read == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..read]);
    }
    all
}

/// A credential far over any token's size is refused before the
/// handshake and never echoed.
#[tokio::test]
async fn an_oversized_token_is_refused_not_echoed() {
    let sidecar = spawn(|_| {}).await;
    for size in [20 * 1024, 100 * 1024] {
        oversized(&sidecar, size).await;
    }
}

async fn oversized(sidecar: &crate::harness::Sidecar, size: usize) {
    use tokio::io::AsyncWriteExt;
    let huge = "a".repeat(size);
    let mut stream = tcp(sidecar.addr).await;
    let request = format!(
        "GET /ws/notifications/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {huge}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = head(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        answer.len() < 4096,
        "the token is not echoed: {} bytes",
        answer.len()
    );
}

/// A client sending faster than `client_messages_per_second` (bursts of
/// twice that) is closed with 1008.
#[tokio::test]
async fn a_flooding_client_is_closed() {
    let sidecar = spawn(|s| s.client_messages_per_second = 5).await;
    let mut client = sidecar.client(3).await;
    for _ in 0..30 {
        client.send(serde_json::json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let (code, reason) = loop {
        match client.read(Duration::from_secs(5)).await {
            crate::harness::Next::Json(event) if event["type"] == "pong" => pongs += 1,
            crate::harness::Next::Close(code, reason) => break (code, reason),
            other => panic!("expected pongs then a close, got {other:?}"),
        }
    };
    assert_eq!((code, reason.as_str()), (1008, "rate_limited"));
    assert!((9..=12).contains(&pongs), "the burst is answered: {pongs}");
}

/// Refused handshakes are upgraded only to carry their close frame; past a
/// quarter of `max_pending_connections` of them at once, a refusal is a
/// plain 429 answer, so bad handshakes cannot pile up sockets.
#[tokio::test]
async fn refused_handshakes_at_once_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let sidecar = spawn(|s| s.max_pending_connections = 8).await;
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tcp(sidecar.addr).await;
        let request = "GET /ws/notifications/?token=not.a.jwt HTTP/1.1\r\nHost: x\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = head(&mut stream).await;
        statuses.push(String::from_utf8_lossy(&answer[..12]).to_string());
        held.push(stream);
    }
    assert_eq!(statuses, ["HTTP/1.1 101", "HTTP/1.1 101", "HTTP/1.1 429"]);
}
