//! Python channels_redis `group_send` of a `send_notification` event (what
//! the contract's `send_notification_ws` does) reaches a client of herald's
//! sidecar, for each of the three token locations, over the sorted-set and
//! pub/sub layers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::config::{LayerBackend, Settings};
use herald::sidecar::SidecarState;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{LayerConfig, Peer, init_tracing};

const SECRET: &str = "interop-sidecar-secret-not-for-any-deployment";

#[derive(Clone, Copy, Debug)]
enum Location {
    Subprotocol,
    Cookie,
    Query,
}

async fn python_group_send_reaches_herald_client(backend: LayerBackend) {
    init_tracing();
    let mut config = LayerConfig::fresh();
    config.backend = backend;
    let layer = herald::layer::build(&config.settings()).unwrap();
    let (store, _dir) = crate::harness::sqlite_store().await;
    let secret = SecretString::from(SECRET);
    let state = SidecarState::new(layer, store, secret.clone(), Settings::defaults().sidecar);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(herald::http::serve_sockets(listener, state, async move {
        let _ = stopped.await;
    }));
    for (i, location) in [Location::Subprotocol, Location::Cookie, Location::Query]
        .into_iter()
        .enumerate()
    {
        let user_id = 500 + i as i64;
        let token = herald::tokens::mint(&secret, user_id, Duration::from_secs(60)).unwrap();
        let mut url = format!("ws://{addr}/ws/notifications/");
        if let Location::Query = location {
            url.push_str(&format!("?token={token}"));
        }
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        match location {
            Location::Subprotocol => {
                headers.insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&token).unwrap(),
                );
            }
            Location::Cookie => {
                let cookie = format!("access={token}");
                headers.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
            }
            Location::Query => {}
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        // The pong comes after the connection joined its group.
        ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "pong", "{location:?}");
        let data = json!({
            "id": 123 + i, "title": "Task Overdue",
            "message": "Task \"Report\" is now overdue.", "notification_type": "overdue",
            "is_read": false, "created_at": "2025-12-11T08:12:34.123456Z",
            "data": {"task_id": 42}});
        let event = json!({"type": "send_notification", "data": data});
        let group = format!("notifications_{user_id}");
        let peer_config = config.clone();
        let lines = tokio::task::spawn_blocking(move || {
            Peer::run("group_send", &peer_config, &["--group", &group], &[event])
        })
        .await
        .unwrap();
        assert_eq!(lines.last(), Some(&json!({"sent": true})));
        assert_eq!(
            next_json(&mut ws).await,
            json!({"type": "notification", "data": data}),
            "{location:?}"
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a message within 15 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_group_send_reaches_a_sidecar_client() {
    python_group_send_reaches_herald_client(LayerBackend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pubsub_group_send_reaches_a_sidecar_client() {
    python_group_send_reaches_herald_client(LayerBackend::RedisPubsub).await;
}
