//! Client messages: ping, mark read (one or all) each answered; anything
//! else gets an error event and the socket stays open; an oversized message
//! closes with 1009.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use futures_util::SinkExt;

use crate::harness::spawn;

#[tokio::test]
async fn unknown_and_malformed_messages_get_error_events() {
    let sidecar = spawn(|_| {}).await;
    let mut client = sidecar.client(1).await;
    client
        .send(json!({"type": "subscribe", "group": "admins"}))
        .await;
    let error = client.json().await;
    assert_eq!(error["type"], "error");
    let text = error["data"]["message"].as_str().unwrap();
    assert!(
        text.contains("unknown message type \"subscribe\""),
        "{text}"
    );
    client.ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(client.json().await["type"], "error");
    client
        .send(json!({"type": "mark_read", "id": "seven"}))
        .await;
    let error = client.json().await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid \"mark_read\" message")
    );
    client
        .ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(
        client.json().await,
        json!({"type": "error", "data": {"message": "messages must be JSON text"}})
    );
    client.ping().await;
}

#[tokio::test]
async fn mark_read_one_and_all() {
    let sidecar = spawn(|_| {}).await;
    let a = sidecar.notification(4, "a").await;
    sidecar.notification(4, "b").await;
    sidecar.notification(4, "c").await;
    let mut client = sidecar.client(4).await;
    client.send(json!({"type": "mark_read", "id": a.id})).await;
    assert_eq!(
        client.json().await,
        json!({"type": "marked_read", "data": {"id": a.id, "updated": 1, "unread_count": 2}})
    );
    client.send(json!({"type": "mark_all_read"})).await;
    assert_eq!(
        client.json().await,
        json!({"type": "marked_read", "data": {"id": null, "updated": 2, "unread_count": 0}})
    );
    assert_eq!(sidecar.store.unread_count(4).await.unwrap(), 0);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let sidecar = spawn(|s| s.max_message_size = 1024).await;
    let mut client = sidecar.client(1).await;
    let big = json!({"type": "ping", "pad": "x".repeat(1500)});
    client.send(big).await;
    assert_eq!(client.closed().await, (1009, "message_too_big".to_string()));
    // Far over the limit: refused by the frame reader, still 1009 when
    // the close gets through, and the connection is gone either way.
    let mut client = sidecar.client(1).await;
    let huge = "y".repeat(64 * 1024);
    let _ = client.ws.send(Message::text(huge)).await;
    let _ = client.read(crate::harness::WAIT).await;
    sidecar
        .until("both closed", |s| s.open_connections() == 0)
        .await;
    assert_eq!(sidecar.state.metrics().oversized_messages, 2);
}
