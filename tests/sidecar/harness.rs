//! A sidecar on port 0 with its own database and layer, a WebSocket client,
//! and tokens of every kind (valid, expired, badly signed, `alg: none`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use herald::config::{Settings, SidecarSettings};
use herald::layer::{ChannelLayer, MemoryLayer, Message as LayerMessage};
use herald::payload::NotificationPayload;
use herald::sidecar::SidecarState;
use herald::store::{Backend, NewNotification, Notification, Store};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{TestStore, fresh_store};

pub(crate) const SECRET: &str = "sidecar-test-secret-not-for-any-deployment";
/// How long a test waits for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn secret() -> SecretString {
    SecretString::from(SECRET)
}

/// A valid access token for `user_id`, living `ttl`.
pub(crate) fn token(user_id: i64, ttl: Duration) -> String {
    herald::tokens::mint(&secret(), user_id, ttl).unwrap()
}

/// An HS256 token with these claims, signed with `key`.
pub(crate) fn signed(claims: Value, key: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(key.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn expired_token(user_id: i64) -> String {
    let claims = json!({"token_type": "access", "exp": now() - 60, "iat": now() - 360,
        "jti": "x", "user_id": user_id.to_string()});
    signed(claims, SECRET)
}

pub(crate) fn foreign_token(user_id: i64) -> String {
    let claims = json!({"token_type": "access", "exp": now() + 300, "iat": now(),
        "jti": "x", "user_id": user_id.to_string()});
    signed(claims, "some-other-secret")
}

pub(crate) fn alg_none_token(user_id: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({"token_type": "access", "exp": now() + 300, "iat": now(),
        "jti": "x", "user_id": user_id.to_string()});
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// A sidecar serving on 127.0.0.1:<port 0>.
pub(crate) struct Sidecar {
    pub(crate) addr: SocketAddr,
    pub(crate) state: SidecarState,
    pub(crate) layer: Arc<dyn ChannelLayer>,
    pub(crate) store: Store,
    config: SidecarSettings,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _db: TestStore,
}

pub(crate) fn settings() -> SidecarSettings {
    Settings::defaults().sidecar
}

pub(crate) fn memory_layer() -> Arc<dyn ChannelLayer> {
    Arc::new(MemoryLayer::new(&Settings::defaults().layer).unwrap())
}

/// A sidecar on the memory layer and a fresh SQLite database.
pub(crate) async fn spawn(configure: impl FnOnce(&mut SidecarSettings)) -> Sidecar {
    let db = fresh_store(Backend::Sqlite).await;
    spawn_with(memory_layer(), db, configure).await
}

pub(crate) async fn spawn_with(
    layer: Arc<dyn ChannelLayer>,
    db: TestStore,
    configure: impl FnOnce(&mut SidecarSettings),
) -> Sidecar {
    let mut config = settings();
    configure(&mut config);
    let store = db.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = SidecarState::new(layer.clone(), store.clone(), secret(), config.clone());
    let mut sidecar = Sidecar {
        addr,
        state,
        layer,
        store,
        config,
        stop: None,
        task: None,
        _db: db,
    };
    sidecar.serve(listener);
    sidecar
}

impl Sidecar {
    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(herald::http::serve_sockets(
            listener,
            self.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// A new sidecar on the same address, database and layer, after
    /// [`Sidecar::shutdown`].
    pub(crate) async fn start_again(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.state = SidecarState::new(
            self.layer.clone(),
            self.store.clone(),
            secret(),
            self.config.clone(),
        );
        self.serve(listener);
    }

    pub(crate) fn url(&self, query: &str) -> String {
        format!("ws://{}/ws/notifications/{query}", self.addr)
    }

    /// Stops the server and waits for `serve` to return.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("serve returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// Connects with the token as the only subprotocol, and waits until the
    /// connection has joined its group (a ping is answered after that).
    pub(crate) async fn client(&self, user_id: i64) -> Client {
        let token = token(user_id, Duration::from_secs(300));
        let mut client = connect(&self.url(""), &[&token], None).await;
        client.ping().await;
        client
    }

    /// A stored notification for `user_id`.
    pub(crate) async fn notification(&self, user_id: i64, title: &str) -> Notification {
        self.store
            .create_notification(&NewNotification {
                user_id,
                title: title.into(),
                message: format!("{title} message"),
                notification_type: "overdue".into(),
                data: json!({"task_id": 1}),
                dedup_key: None,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Publishes a row as `send_notification_ws` does.
    pub(crate) async fn publish(&self, row: &Notification) {
        herald::publish::send_notification_ws(
            self.layer.as_ref(),
            row.user_id,
            &NotificationPayload::from(row),
        )
        .await
        .unwrap();
    }

    pub(crate) async fn group_send(&self, user_id: i64, message: Value) {
        let Value::Object(map) = message else {
            panic!("an object")
        };
        let map: LayerMessage = map;
        self.layer
            .group_send(&herald::publish::notification_group(user_id), map)
            .await
            .unwrap();
    }

    /// Waits until `check` holds on the metrics (or fails the test).
    pub(crate) async fn until(&self, what: &str, check: impl Fn(&SidecarState) -> bool) {
        self.until_within(what, WAIT, check).await
    }

    /// [`Sidecar::until`] with a deadline of its own.
    pub(crate) async fn until_within(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&SidecarState) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while !check(&self.state) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.state.metrics()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) struct Client {
    pub(crate) ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub(crate) protocol: Option<String>,
}

/// Opens a WebSocket offering `protocols`, with an optional Cookie header.
pub(crate) async fn connect(url: &str, protocols: &[&str], cookie: Option<&str>) -> Client {
    try_connect(url, protocols, cookie)
        .await
        .expect("handshake")
}

pub(crate) async fn try_connect(
    url: &str,
    protocols: &[&str],
    cookie: Option<&str>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&protocols.join(", ")).unwrap(),
        );
    }
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(cookie).unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok(Client { ws, protocol })
}

/// What a client read next.
#[derive(Debug)]
pub(crate) enum Next {
    Json(Value),
    Close(u16, String),
    /// The stream ended or broke without a close frame.
    Gone,
    Silent,
}

impl Client {
    /// The next text message or close, skipping pings, within `wait`.
    pub(crate) async fn read(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            match next {
                Err(_) => return Next::Silent,
                Ok(None) | Ok(Some(Err(_))) => return Next::Gone,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Next::Json(serde_json::from_str(text.as_str()).unwrap());
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return match frame {
                        Some(f) => Next::Close(u16::from(f.code), f.reason.to_string()),
                        None => Next::Close(1005, String::new()),
                    };
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub(crate) async fn json(&mut self) -> Value {
        match self.read(WAIT).await {
            Next::Json(value) => value,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// The close frame (code, reason), failing on any message before it.
    pub(crate) async fn closed(&mut self) -> (u16, String) {
        match self.read(WAIT).await {
            Next::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Nothing arrives within `wait`.
    pub(crate) async fn silent(&mut self, wait: Duration) {
        match self.read(wait).await {
            Next::Silent => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// Sends a ping message and waits for its pong.
    pub(crate) async fn ping(&mut self) {
        self.send(json!({"type": "ping"})).await;
        let pong = self.json().await;
        assert_eq!(pong, json!({"type": "pong", "data": {}}));
    }
}

/// The browser's view of a stored row: `{"type": "notification", "data": ...}`.
pub(crate) fn as_event(row: &Notification) -> Value {
    json!({"type": "notification", "data": NotificationPayload::from(row).to_value()})
}
