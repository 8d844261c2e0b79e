//! Delivery: `send_notification` group events reach the browser as
//! `{"type": "notification", "data": ...}`, `chat_message` and `typing` keep
//! their shapes, an unknown type is dropped without closing; over the memory
//! layer and the shared Redis (sorted-set and pub/sub layers).

use std::sync::Arc;
use std::time::Duration;

use herald::config::{LayerBackend, Settings};
use herald::layer::ChannelLayer;
use herald::store::Backend;
use serde_json::json;

use crate::harness::{Sidecar, as_event, spawn, spawn_with};
use crate::helpers::fresh_store;

async fn delivers_every_event_type(sidecar: &Sidecar) {
    let mut client = sidecar.client(42).await;
    let row = sidecar.notification(42, "Task Overdue").await;
    sidecar.publish(&row).await;
    assert_eq!(client.json().await, as_event(&row));
    let chat = json!({"id": 9, "room": "task_1", "content": "hi"});
    sidecar
        .group_send(42, json!({"type": "chat_message", "data": chat}))
        .await;
    assert_eq!(
        client.json().await,
        json!({"type": "chat_message", "data": chat})
    );
    let typing = json!({"user": {"id": 3}, "is_typing": true});
    sidecar
        .group_send(42, json!({"type": "typing", "data": typing}))
        .await;
    assert_eq!(
        client.json().await,
        json!({"type": "typing", "data": typing})
    );
    // An unknown type is dropped; the socket stays open and keeps working.
    sidecar
        .group_send(42, json!({"type": "mystery.event", "data": {}}))
        .await;
    let next = sidecar.notification(42, "after the mystery").await;
    sidecar.publish(&next).await;
    assert_eq!(client.json().await, as_event(&next));
    client.ping().await;
    let metrics = sidecar.state.metrics();
    assert_eq!(metrics.events_dropped_unknown, 1);
    assert_eq!(metrics.events_delivered, 4);
}

#[tokio::test]
async fn over_the_memory_layer() {
    let sidecar = spawn(|_| {}).await;
    delivers_every_event_type(&sidecar).await;
}

fn redis_layer(backend: LayerBackend) -> Arc<dyn ChannelLayer> {
    let mut settings = Settings::defaults().layer;
    settings.backend = backend;
    settings.hosts = vec![
        std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    ];
    settings.prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    herald::layer::build(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_redis_layer() {
    let layer = redis_layer(LayerBackend::Redis);
    let sidecar = spawn_with(layer, fresh_store(Backend::Sqlite).await, |_| {}).await;
    delivers_every_event_type(&sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_redis_pubsub_layer() {
    let layer = redis_layer(LayerBackend::RedisPubsub);
    let sidecar = spawn_with(layer, fresh_store(Backend::Sqlite).await, |_| {}).await;
    delivers_every_event_type(&sidecar).await;
}

#[tokio::test]
async fn every_connection_of_the_user_gets_it_and_leaves_the_group_on_close() {
    let sidecar = spawn(|_| {}).await;
    let mut tab1 = sidecar.client(7).await;
    let mut tab2 = sidecar.client(7).await;
    let row = sidecar.notification(7, "both tabs").await;
    sidecar.publish(&row).await;
    assert_eq!(tab1.json().await, as_event(&row));
    assert_eq!(tab2.json().await, as_event(&row));
    drop(tab1);
    sidecar
        .until("one connection left", |s| s.open_connections() == 1)
        .await;
    let report = herald::publish::send_notification_ws(
        sidecar.layer.as_ref(),
        7,
        &herald::payload::NotificationPayload::from(&row),
    )
    .await
    .unwrap();
    assert_eq!(report.delivered, 1, "the closed tab left the group");
    tab2.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_connection_older_than_group_expiry_keeps_receiving() {
    let mut layer_settings = Settings::defaults().layer;
    layer_settings.group_expiry = 1;
    let layer: Arc<dyn ChannelLayer> =
        Arc::new(herald::layer::MemoryLayer::new(&layer_settings).unwrap());
    let db = fresh_store(Backend::Sqlite).await;
    let sidecar = spawn_with(layer, db, |s| {
        s.group_renew_interval = Duration::from_millis(300)
    })
    .await;
    let mut client = sidecar.client(5).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let row = sidecar.notification(5, "a day later").await;
    sidecar.publish(&row).await;
    assert_eq!(client.json().await, as_event(&row));
}
