//! A herald job reaches a client of the application's own Django
//! NotificationConsumer (tests/interop/django_app, written as the contract
//! describes it) served by daphne, over the shared Redis channel layer.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures_util::StreamExt;
use herald::jobs::{JobContext, parse};
use herald::payload::NotificationPayload;
use herald::publish::outbox::Publisher;
use herald::store::NewTask;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{LayerConfig, python};

const SECRET: &str = "interop-django-secret-not-for-any-deployment";

/// daphne serving the Django app on a free port, killed on drop.
struct Daphne {
    port: u16,
    child: Child,
}

impl Daphne {
    fn start(config: &LayerConfig) -> Daphne {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/django_app");
        let mut child = Command::new(python())
            .args([
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "asgi:application",
            ])
            .current_dir(&app)
            .env("PYTHONPATH", &app)
            .env("INTEROP_SECRET_KEY", SECRET)
            .env("INTEROP_REDIS_URL", &config.hosts[0])
            .env("INTEROP_PREFIX", &config.prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("daphne starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Daphne { port, child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("daphne did not listen on {port}");
    }
}

impl Drop for Daphne {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(port: u16, token: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://127.0.0.1:{port}/ws/notifications/")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(token).unwrap(),
    );
    let (client, response) = tokio_tungstenite::connect_async(request).await?;
    let echoed = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        echoed,
        Some(token),
        "the consumer echoes the token subprotocol"
    );
    Ok(client)
}

async fn next_json(client: &mut Client) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), client.next())
            .await
            .expect("an event within 15 s")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn herald_jobs_reach_the_django_notification_consumer() {
    let config = LayerConfig::fresh();
    let daphne = Daphne::start(&config);
    let secret = SecretString::from(SECRET);
    let token = herald::tokens::mint(&secret, 77, Duration::from_secs(300)).unwrap();
    let mut client = connect(daphne.port, &token)
        .await
        .expect("the consumer accepts herald's token");

    let (store, _dir) = crate::harness::sqlite_store().await;
    let layer: Arc<dyn herald::layer::ChannelLayer> =
        Arc::new(herald::layer::RedisLayer::new(&config.settings()).unwrap());
    let ctx = JobContext {
        store: store.clone(),
        publisher: Publisher::new(store.clone(), layer),
        reminder_offsets: vec![Duration::from_secs(3600)],
        closed_statuses: vec!["done".into()],
        job_id: "django-1".into(),
    };

    // The consumer joins its group before accepting; give Redis a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let notify = json!({"user_id": 77, "title": "Überfällig 🔔", "message": "Hello \"there\"",
                        "notification_type": "generic", "data": {"url": "/tasks/1", "n": 1.5}});
    let outcome = parse("notify", notify).unwrap().run(&ctx).await.unwrap();
    assert_eq!(outcome.published.sent, 1);
    let row = &store.list_notifications_after(77, 0, 10).await.unwrap()[0];
    assert_eq!(
        next_json(&mut client).await,
        json!({"type": "notification", "data": NotificationPayload::from(row).to_value()})
    );

    store
        .create_task(&NewTask {
            title: "Report".into(),
            status: "open".into(),
            deadline: Some(Utc::now() - TimeDelta::hours(1)),
            assignee_id: Some(77),
            created_by_id: None,
        })
        .await
        .unwrap();
    parse("overdue_check", json!({}))
        .unwrap()
        .run(&ctx)
        .await
        .unwrap();
    let event = next_json(&mut client).await;
    assert_eq!(event["type"], "notification");
    assert_eq!(event["data"]["title"], "Task Overdue");
    assert_eq!(event["data"]["message"], "Task \"Report\" is now overdue.");
    assert_eq!(event["data"]["notification_type"], "overdue");
}

#[tokio::test]
async fn the_django_consumer_refuses_a_token_signed_with_another_key() {
    let config = LayerConfig::fresh();
    let daphne = Daphne::start(&config);
    let other = SecretString::from("not-the-django-secret");
    let token = herald::tokens::mint(&other, 77, Duration::from_secs(300)).unwrap();
    assert!(
        connect(daphne.port, &token).await.is_err(),
        "handshake refused"
    );
}
