//! Recovery: `?last_id=N` or a resume message sends the missed rows from
//! the database in order, bounded, then live ones, with no gap and no
//! duplicate; on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::json;

use crate::harness::{as_event, connect, memory_layer, spawn_with, token};
use crate::helpers::{TestStore, on_both_databases};

async fn resume_without_gap_or_duplicate(db: TestStore) {
    let sidecar = spawn_with(memory_layer(), db, |s| s.replay_limit = 3).await;
    let user = 11;
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push(sidecar.notification(user, &format!("n{i}")).await);
    }
    // Someone else's rows never show up.
    sidecar.notification(12, "not yours").await;
    let url = sidecar.url(&format!("?last_id={}", rows[0].id));
    let mut client = connect(&url, &[&token(user, Duration::from_secs(60))], None).await;
    for row in &rows[1..4] {
        assert_eq!(client.json().await, as_event(row));
    }
    let resumed = client.json().await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "data": {"count": 3, "last_id": rows[3].id, "more": true,
            "recovered": true, "resync": false}})
    );
    // The rest on request.
    client
        .send(json!({"type": "resume", "last_id": rows[3].id}))
        .await;
    assert_eq!(client.json().await, as_event(&rows[4]));
    let resumed = client.json().await;
    assert_eq!(
        resumed["data"],
        json!({"count": 1, "last_id": rows[4].id, "more": false, "recovered": true,
            "resync": false})
    );
    // A live copy of a row already sent is dropped; a new one arrives.
    sidecar.publish(&rows[2]).await;
    let fresh = sidecar.notification(user, "live").await;
    sidecar.publish(&fresh).await;
    assert_eq!(client.json().await, as_event(&fresh));
    // Resuming from the start again skips everything already sent, and
    // the row the client resumed from (it has it).
    client.send(json!({"type": "resume", "last_id": 0})).await;
    let resumed = client.json().await;
    assert_eq!(resumed["data"]["count"], 0, "{resumed}");
    let metrics = sidecar.state.metrics();
    assert_eq!(metrics.notifications_replayed, 4);
    assert_eq!(metrics.events_dropped_duplicate, 1);
}
on_both_databases!(resume_with_last_id, resume_without_gap_or_duplicate);

/// Rows written while the client was away (and published to nobody) come
/// back on reconnect, and a row published during the replay is sent once.
async fn reconnect_recovers_what_was_missed(db: TestStore) {
    let sidecar = spawn_with(memory_layer(), db, |_| {}).await;
    let user = 21;
    let mut client = sidecar.client(user).await;
    let seen = sidecar.notification(user, "seen").await;
    sidecar.publish(&seen).await;
    assert_eq!(client.json().await, as_event(&seen));
    drop(client);
    sidecar
        .until("disconnected", |s| s.open_connections() == 0)
        .await;
    let missed = sidecar.notification(user, "missed while away").await;
    sidecar.publish(&missed).await;
    let url = sidecar.url(&format!("?last_id={}", seen.id));
    let mut client = connect(&url, &[&token(user, Duration::from_secs(60))], None).await;
    // Published again right after connecting: it may reach the group
    // before or after the replay reads it; the client gets it once.
    let publisher = {
        let layer = sidecar.layer.clone();
        let payload = herald::payload::NotificationPayload::from(&missed);
        tokio::spawn(async move {
            for _ in 0..20 {
                let _ = herald::publish::send_notification_ws(layer.as_ref(), user, &payload).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    assert_eq!(client.json().await, as_event(&missed));
    assert_eq!(client.json().await["type"], "resumed");
    publisher.await.unwrap();
    client.silent(Duration::from_millis(200)).await;
}
on_both_databases!(reconnect_recovers, reconnect_recovers_what_was_missed);

#[tokio::test]
async fn a_bad_last_id_is_an_error_event_not_a_close() {
    let db = crate::helpers::fresh_store(herald::store::Backend::Sqlite).await;
    let sidecar = spawn_with(memory_layer(), db, |_| {}).await;
    let url = sidecar.url("?last_id=abc");
    let mut client = connect(&url, &[&token(1, Duration::from_secs(60))], None).await;
    let error = client.json().await;
    assert_eq!(
        error,
        json!({"type": "error", "data": {"message": "last_id must be an integer"}})
    );
    client.ping().await;
}

/// A row whose transaction took its id first but committed after a higher
/// one was delivered (parallel commits on PostgreSQL) is not skipped by a
/// resume from the higher id: the replay also reads what was created just
/// before its position.
#[tokio::test]
async fn a_lower_id_committed_after_a_higher_one_is_not_skipped() {
    let db = crate::helpers::fresh_store(herald::store::Backend::Postgres).await;
    let sidecar = spawn_with(memory_layer(), db, |_| {}).await;
    let herald::store::Store::Postgres(pool) = &sidecar.store else {
        unreachable!()
    };
    let user = 31;
    let mut client = sidecar.client(user).await;
    // A slow transaction takes its id and holds its commit.
    let mut slow = pool.begin().await.unwrap();
    let late_id: i64 = sqlx::query_scalar(
        "INSERT INTO notifications_notification \
         (user_id, title, message, type, is_read, created_at, data) \
         VALUES ($1, 'late', 'late message', 'overdue', false, now(), '{\"task_id\": 1}') \
         RETURNING id",
    )
    .bind(user)
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    let early = sidecar.notification(user, "early").await;
    assert!(early.id > late_id);
    sidecar.publish(&early).await;
    assert_eq!(client.json().await, as_event(&early));
    drop(client);
    sidecar
        .until("disconnected", |s| s.open_connections() == 0)
        .await;
    slow.commit().await.unwrap();
    let late = sidecar
        .store
        .get_notification(late_id)
        .await
        .unwrap()
        .unwrap();
    sidecar.publish(&late).await; // to nobody: the client is away

    let url = sidecar.url(&format!("?last_id={}", early.id));
    let mut client = connect(&url, &[&token(user, Duration::from_secs(60))], None).await;
    assert_eq!(client.json().await, as_event(&late));
    let resumed = client.json().await;
    assert_eq!(
        resumed["data"],
        json!({"count": 1, "last_id": early.id, "more": false, "recovered": true,
            "resync": false})
    );
}

/// When the layer says a connection may have lost messages (a full buffer,
/// Redis reconnected), the sidecar reads what came after its cursor from
/// the database itself and says so (`resync: true`).
async fn resync_replays_from_the_cursor(db: TestStore) {
    let sidecar = spawn_with(memory_layer(), db, |_| {}).await;
    let user = 41;
    let mut client = sidecar.client(user).await;
    let seen = sidecar.notification(user, "seen").await;
    sidecar.publish(&seen).await;
    assert_eq!(client.json().await, as_event(&seen));
    // Two rows whose live copies were lost.
    let lost = [
        sidecar.notification(user, "lost 1").await,
        sidecar.notification(user, "lost 2").await,
    ];
    sidecar
        .group_send(user, json!({"type": herald::layer::RESYNC}))
        .await;
    for row in &lost {
        assert_eq!(client.json().await, as_event(row));
    }
    let resumed = client.json().await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "data": {"count": 2, "last_id": lost[1].id, "more": false,
            "recovered": true, "resync": true}})
    );
    assert_eq!(sidecar.state.metrics().resyncs, 1);
    // A connection that had seen nothing reads what was created since it
    // opened.
    let mut fresh = sidecar.client(user + 1).await;
    let missed = sidecar.notification(user + 1, "missed").await;
    sidecar
        .group_send(user + 1, json!({"type": herald::layer::RESYNC}))
        .await;
    assert_eq!(fresh.json().await, as_event(&missed));
    assert_eq!(fresh.json().await["data"]["resync"], true);
}
on_both_databases!(
    a_resync_replays_from_the_cursor,
    resync_replays_from_the_cursor
);
