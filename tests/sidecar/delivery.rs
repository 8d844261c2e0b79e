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

/// Layer settings on the shared Redis with a fresh prefix.
fn redis_settings(backend: LayerBackend) -> herald::config::LayerSettings {
    let mut settings = Settings::defaults().layer;
    settings.backend = backend;
    settings.hosts = vec![
        std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    ];
    settings.prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings
}

fn redis_layer(backend: LayerBackend) -> Arc<dyn ChannelLayer> {
    herald::layer::build(&redis_settings(backend)).unwrap()
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

/// Rows for `user`: `count` notifications with `size`-byte messages.
async fn rows_of(
    sidecar: &Sidecar,
    user: i64,
    count: usize,
    size: usize,
) -> Vec<herald::store::Notification> {
    let mut rows = Vec::with_capacity(count);
    let batch: Vec<_> = (0..count)
        .map(|i| herald::store::NewNotification {
            user_id: user,
            title: format!("burst {i}"),
            message: "x".repeat(size),
            notification_type: "info".into(),
            data: json!({}),
            dedup_key: None,
        })
        .collect();
    for chunk in batch.chunks(500) {
        let created = sidecar.store.create_notifications(chunk).await.unwrap();
        rows.extend(created.answers.into_iter().map(|a| a.into_inner()));
    }
    rows
}

/// Reads until `want` distinct notification ids arrived, paging resumes as
/// the JavaScript client does; answers (distinct ids, duplicates).
async fn read_all(client: &mut crate::harness::Client, want: usize) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    while seen.len() < want {
        let event = match client.read(Duration::from_secs(30)).await {
            crate::harness::Next::Json(event) => event,
            other => panic!("{} of {want} read, then {other:?}", seen.len()),
        };
        match event["type"].as_str() {
            Some("notification") if !seen.insert(event["data"]["id"].as_i64().unwrap()) => {
                duplicates += 1;
            }
            Some("resumed") if event["data"]["more"] == true => {
                let last_id = event["data"]["last_id"].clone();
                client
                    .send(json!({"type": "resume", "last_id": last_id}))
                    .await;
            }
            _ => {}
        }
    }
    (seen.len(), duplicates)
}

/// A sidecar on the shared Redis and a fresh PostgreSQL database for the
/// bursts below, and its layer settings (for the worker's publisher). The
/// write timeout is short enough to close a client that never reads soon,
/// long enough for a reader on a loaded machine to make room now and then.
async fn burst_sidecar() -> (Sidecar, herald::config::LayerSettings) {
    let settings = redis_settings(LayerBackend::Redis);
    let layer = herald::layer::build(&settings).unwrap();
    let db = fresh_store(Backend::Postgres).await;
    let sidecar = spawn_with(layer, db, |s| {
        s.write_timeout = Duration::from_secs(4);
    })
    .await;
    (sidecar, settings)
}

/// A burst of 16 KB notifications past every buffer on the way (the process
/// queue's capacity at the sender, herald's channel buffers, the socket's:
/// 2,000 of them are 32 MB, past what the kernel buffers of a loopback
/// socket take, which a full suite's resyncs of 4 KB ones once did not
/// fill): a client that reads gets every one exactly once; a client that
/// never reads is closed by the server (4008; it cannot even read the
/// frame) and, reconnecting, resumes all of them from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_reaches_every_reader_and_a_client_that_never_reads_is_closed() {
    let (sidecar, settings) = burst_sidecar().await;
    const BURST: usize = 2000;
    let (reader_id, sleeper_id) = (201, 202);
    let mut reader = sidecar.client(reader_id).await;
    let sleeper = sidecar.client(sleeper_id).await;
    const SIZE: usize = 16 * 1024;
    let mut rows = rows_of(&sidecar, reader_id, BURST, SIZE).await;
    rows.extend(rows_of(&sidecar, sleeper_id, BURST, SIZE).await);
    // The worker's publisher: another layer instance on the same Redis.
    let sender = herald::layer::build(&settings).unwrap();
    let sends: Vec<_> = rows.iter().map(send_of).collect();
    for chunk in sends.chunks(500) {
        sender.group_send_many(chunk.to_vec()).await;
    }
    let (distinct, duplicates) = read_all(&mut reader, BURST).await;
    assert_eq!(
        (distinct, duplicates),
        (BURST, 0),
        "each once on its connection"
    );
    // Four seconds of a blocked write, then the close; a full suite's
    // load can add to that.
    sidecar
        .until_within(
            "the client that never reads is closed",
            Duration::from_secs(30),
            |s| s.open_connections() == 1,
        )
        .await;
    assert!(sidecar.state.metrics().slow_client_disconnects >= 1);
    drop(sleeper);
    let url = sidecar.url("?last_id=0");
    let token = crate::harness::token(sleeper_id, Duration::from_secs(300));
    let mut back = crate::harness::connect(&url, &[&token], None).await;
    let (distinct, again) = read_all(&mut back, BURST).await;
    assert_eq!(distinct, BURST, "everything it missed, resumed");
    let metrics = sidecar.state.metrics();
    eprintln!(
        "fault: never-reading client | rows {} | reader {BURST} distinct, {duplicates} duplicate | \
         sleeper closed (4008), resumed {distinct}, {again} duplicate | resyncs {} | lost 0",
        2 * BURST,
        metrics.resyncs
    );
}

/// A row as the worker publishes it: the group and its message.
fn send_of(row: &herald::store::Notification) -> (String, herald::layer::Message) {
    let payload = herald::payload::NotificationPayload::from(row);
    let message = json!({"type": "send_notification", "data": payload.to_value()});
    (
        herald::publish::notification_group(row.user_id),
        message.as_object().unwrap().clone(),
    )
}

/// What a client read until it had `want` distinct notifications (and, with
/// `resync`, the end of a server-started replay, `resumed` with `resync:
/// true`) or was closed: the ids, the duplicates, whether a resync came,
/// and the close.
#[derive(Debug, Default)]
struct Reading {
    ids: std::collections::HashSet<i64>,
    duplicates: usize,
    resynced: bool,
    close: Option<(u16, String)>,
}

async fn read_or_closed(client: &mut crate::harness::Client, want: usize, resync: bool) -> Reading {
    let mut reading = Reading::default();
    while reading.ids.len() < want || (resync && !reading.resynced) {
        let event = match client.read(Duration::from_secs(30)).await {
            crate::harness::Next::Json(event) => event,
            crate::harness::Next::Close(code, reason) => {
                reading.close = Some((code, reason));
                return reading;
            }
            other => panic!("{} of {want} read, then {other:?}", reading.ids.len()),
        };
        match event["type"].as_str() {
            Some("notification") if !reading.ids.insert(event["data"]["id"].as_i64().unwrap()) => {
                reading.duplicates += 1;
            }
            Some("resumed") => {
                reading.resynced |= event["data"]["resync"] == true;
                if event["data"]["more"] == true {
                    let last_id = event["data"]["last_id"].clone();
                    client
                        .send(json!({"type": "resume", "last_id": last_id}))
                        .await;
                }
            }
            _ => {}
        }
    }
    reading
}

/// Issue 12's measured case: 5,000 small notifications to a client that
/// does not read, over Redis with the default capacity (100), sent as fast
/// as the worker's publisher sends. Small frames fit in the socket's
/// buffers, so the server may never see a slow write; the sender holds the
/// copies its queue cannot take (none is dropped there), and herald's
/// channel buffer drops what the connection cannot take. Each notification
/// is delivered or the client is told: either the socket stays open and the
/// dropped copies are replayed from the database (a resync from the first
/// dropped id), so that the client, reading at last, finds all 5,000; or it
/// is closed with 4008 "slow_client" and a reconnect resumes all 5,000. A
/// client reading meanwhile gets each of its own 1,000 once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_notifications_to_a_client_that_never_reads_are_delivered_or_it_is_told() {
    let (sidecar, settings) = burst_sidecar().await;
    const BURST: usize = 5000;
    const READS: usize = 1000;
    let (reader_id, sleeper_id) = (211, 212);
    let mut reader = sidecar.client(reader_id).await;
    let mut sleeper = sidecar.client(sleeper_id).await;
    let reader_rows = rows_of(&sidecar, reader_id, READS, 16).await;
    let sleeper_rows = rows_of(&sidecar, sleeper_id, BURST, 16).await;
    // One of the reader's after every five of the sleeper's.
    let mut sends = Vec::with_capacity(BURST + READS);
    for (i, row) in sleeper_rows.iter().enumerate() {
        sends.push(send_of(row));
        if i % 5 == 4 {
            sends.push(send_of(&reader_rows[i / 5]));
        }
    }
    let sleeper_group = herald::publish::notification_group(sleeper_id);
    let sender = herald::layer::build(&settings).unwrap();
    let (mut handed, mut held, mut dropped) = (0, 0, 0);
    for chunk in sends.chunks(500) {
        let reports = sender.group_send_many(chunk.to_vec()).await;
        for ((group, _), report) in chunk.iter().zip(reports) {
            let report = report.expect("Redis takes every send");
            if *group == sleeper_group {
                handed += report.delivered;
                held += report.held;
                dropped += report.dropped;
            }
        }
    }
    assert_eq!(handed + held, BURST, "one copy each, handed or held");
    assert_eq!(
        dropped, 0,
        "herald's publisher holds copies back, never drops"
    );

    let (distinct, duplicates) = read_all(&mut reader, READS).await;
    assert_eq!((distinct, duplicates), (READS, 0), "the reader, each once");

    // The sleeper reads at last: what is on its socket first.
    // The sleeper's channel buffer overflows in the sidecar: a resync
    // reads what it dropped again.
    let first = read_or_closed(&mut sleeper, BURST, false).await;
    let (path, resumed) = match &first.close {
        None => {
            assert_eq!(first.ids.len(), BURST, "every one on the open socket");
            ("open", 0)
        }
        Some((code, reason)) => {
            assert_eq!((*code, reason.as_str()), (4008, "slow_client"));
            assert!(sidecar.state.metrics().slow_client_disconnects >= 1);
            drop(sleeper);
            let url = sidecar.url("?last_id=0");
            let token = crate::harness::token(sleeper_id, Duration::from_secs(300));
            let mut back = crate::harness::connect(&url, &[&token], None).await;
            let (distinct, _) = read_all(&mut back, BURST).await;
            assert_eq!(distinct, BURST, "everything it missed, resumed");
            ("closed 4008", distinct)
        }
    };
    let metrics = sidecar.state.metrics();
    eprintln!(
        "fault: never-reading client, small payloads | rows {} | sender held {held}, dropped \
         {dropped} of {BURST} copies | reader {READS} distinct, 0 duplicate | sleeper {path}: {} distinct on \
         the socket, {} duplicate, resync {} | resumed {resumed} | resyncs {} | lost 0",
        BURST + READS,
        first.ids.len(),
        first.duplicates,
        first.resynced,
        metrics.resyncs
    );
}

/// Issue 23's gap: live copies arrive out of id order when batches commit
/// in parallel, so a connection can be handed ids above a batch whose live
/// copies are still on their way. Here the client has read 300 newer rows
/// when 2,000 older ones (16 KB each, past every socket buffer) are
/// published while it does not read: its channel buffer drops copies. The
/// replay must start at the first dropped id, not at the newest id the
/// connection was handed (which skipped them all before), and a client
/// closed meanwhile (4008) and resuming from its own cursor must get the
/// older rows too, or be told (`recovered: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn older_rows_published_after_newer_ones_are_not_skipped() {
    let (sidecar, settings) = burst_sidecar().await;
    const OLDER: usize = 2000;
    const NEWER: usize = 300;
    let user = 221;
    let mut client = sidecar.client(user).await;
    let older = rows_of(&sidecar, user, OLDER, 16 * 1024).await;
    let newer = rows_of(&sidecar, user, NEWER, 16).await;
    let sender = herald::layer::build(&settings).unwrap();
    let sends: Vec<_> = newer.iter().map(send_of).collect();
    sender.group_send_many(sends).await;
    let (distinct, _) = read_all(&mut client, NEWER).await;
    assert_eq!(distinct, NEWER, "the newer rows first");
    // The older batch's live copies, while the client does not read.
    let sends: Vec<_> = older.iter().map(send_of).collect();
    for chunk in sends.chunks(500) {
        sender.group_send_many(chunk.to_vec()).await;
    }
    let mut reading = read_or_closed(&mut client, OLDER, false).await;
    // A replay from the first dropped id brings the newer rows again too,
    // and they count in `reading`: read on until every older row is in (a
    // row that never comes fails the read after 30 s of silence), or the
    // socket closes.
    let older_missing = |reading: &Reading| {
        older
            .iter()
            .filter(|row| !reading.ids.contains(&row.id))
            .count()
    };
    while reading.close.is_none() && older_missing(&reading) > 0 {
        let more = read_or_closed(&mut client, older_missing(&reading), false).await;
        reading.ids.extend(more.ids);
        reading.duplicates += more.duplicates;
        reading.close = more.close;
    }
    let path = match reading.close.clone() {
        None => "open".to_string(),
        Some((code, reason)) => {
            assert_eq!((code, reason.as_str()), (4008, "slow_client"));
            // Its own cursor: the highest id it has (a newer row).
            let cursor = newer
                .last()
                .unwrap()
                .id
                .max(reading.ids.iter().copied().max().unwrap_or(0));
            drop(client);
            let url = sidecar.url(&format!("?last_id={cursor}"));
            let token = crate::harness::token(user, Duration::from_secs(300));
            let mut back = crate::harness::connect(&url, &[&token], None).await;
            let resumed = read_or_closed(&mut back, older_missing(&reading), false).await;
            reading.ids.extend(resumed.ids);
            format!("closed 4008, resumed from {cursor}")
        }
    };
    assert_eq!(
        older_missing(&reading),
        0,
        "every older row reaches the client ({path})"
    );
    eprintln!(
        "fault: older rows published after newer ones | {NEWER} newer read, then {OLDER} older \
         (16 KB) while not reading | {path} | {} older distinct, {} duplicate | resyncs {}",
        reading.ids.len(),
        reading.duplicates,
        sidecar.state.metrics().resyncs
    );
}
