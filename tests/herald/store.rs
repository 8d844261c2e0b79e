//! The store on both databases: migrations, idempotent creates, listing,
//! read state, tasks.

use chrono::{Duration, SubsecRound, Utc};
use herald::store::{Inserted, NewNotification, NewTask, PAGE_LIMIT, Store};
use serde_json::json;

use crate::helpers::{TestStore, on_both_databases};

fn new_notification(user_id: i64, dedup_key: Option<&str>) -> NewNotification {
    NewNotification {
        user_id,
        title: "Task Overdue".into(),
        message: "Task \"Report\" is now overdue.".into(),
        notification_type: "overdue".into(),
        data: json!({"task_id": 42}),
        dedup_key: dedup_key.map(String::from),
    }
}

async fn create(
    store: &Store,
    user_id: i64,
    key: Option<&str>,
) -> Inserted<herald::store::Notification> {
    store
        .create_notification(&new_notification(user_id, key))
        .await
        .unwrap()
}

on_both_databases!(second_migrate_is_a_no_op, second_migrate_is_a_no_op_body);
async fn second_migrate_is_a_no_op_body(db: TestStore) {
    let applied = db.store.applied_migrations().await.unwrap();
    assert!(!applied.is_empty());
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i64>::new());
    assert_eq!(db.store.applied_migrations().await.unwrap(), applied);
}

on_both_databases!(repeat_dedup_key_returns_existing, repeat_dedup_key_body);
async fn repeat_dedup_key_body(db: TestStore) {
    let first = create(&db.store, 7, Some("overdue:42")).await;
    let again = create(&db.store, 7, Some("overdue:42")).await;
    assert!(first.is_new());
    assert!(!again.is_new(), "a repeat must say the row already existed");
    assert_eq!(first.clone().into_inner(), again.into_inner());
    let other_user = create(&db.store, 8, Some("overdue:42")).await;
    assert!(other_user.is_new(), "dedup keys are per user");
    assert_ne!(other_user.into_inner().id, first.into_inner().id);
}

on_both_databases!(no_dedup_key_never_collides, no_dedup_key_body);
async fn no_dedup_key_body(db: TestStore) {
    let a = create(&db.store, 7, None).await;
    let b = create(&db.store, 7, None).await;
    assert!(a.is_new() && b.is_new());
    assert_ne!(a.into_inner().id, b.into_inner().id);
}

on_both_databases!(
    eight_concurrent_creates_leave_one_row,
    concurrent_creates_body
);
async fn concurrent_creates_body(db: TestStore) {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move { create(&store, 5, Some("same-key")).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_new()).count(), 1);
    let ids: std::collections::HashSet<i64> =
        outcomes.into_iter().map(|o| o.into_inner().id).collect();
    assert_eq!(ids.len(), 1, "every caller sees the same row");
    let rows = db.store.list_notifications_after(5, 0, 100).await.unwrap();
    assert_eq!(rows.len(), 1);
}

on_both_databases!(
    list_after_is_ascending_bounded_and_per_user,
    list_after_body
);
async fn list_after_body(db: TestStore) {
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(
            create(&db.store, 1, Some(&format!("k{i}")))
                .await
                .into_inner()
                .id,
        );
        create(&db.store, 2, Some(&format!("k{i}"))).await;
    }
    let page = db
        .store
        .list_notifications_after(1, mine[1], 2)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|n| n.id).collect::<Vec<_>>(), mine[2..4]);
    assert!(page.iter().all(|n| n.user_id == 1));
    let all = db
        .store
        .list_notifications_after(1, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), mine);
    assert!(
        db.store
            .list_notifications_after(1, mine[4], 10)
            .await
            .unwrap()
            .is_empty()
    );
}

on_both_databases!(page_size_is_capped, page_cap_body);
async fn page_cap_body(db: TestStore) {
    for i in 0..(PAGE_LIMIT + 3) {
        create(&db.store, 3, Some(&format!("p{i}"))).await;
    }
    let page = db
        .store
        .list_notifications_after(3, 0, PAGE_LIMIT + 100)
        .await
        .unwrap();
    assert_eq!(page.len() as i64, PAGE_LIMIT);
}

on_both_databases!(mark_read_and_unread_count, read_state_body);
async fn read_state_body(db: TestStore) {
    let a = create(&db.store, 1, Some("a")).await.into_inner();
    create(&db.store, 1, Some("b")).await;
    create(&db.store, 1, Some("c")).await;
    let theirs = create(&db.store, 2, Some("a")).await.into_inner();
    assert_eq!(db.store.unread_count(1).await.unwrap(), 3);
    assert!(db.store.mark_read(1, a.id).await.unwrap());
    assert!(
        !db.store.mark_read(1, theirs.id).await.unwrap(),
        "not the user's"
    );
    assert!(!db.store.mark_read(1, i64::MAX).await.unwrap());
    assert_eq!(db.store.unread_count(1).await.unwrap(), 2);
    assert!(
        db.store
            .get_notification(a.id)
            .await
            .unwrap()
            .unwrap()
            .is_read
    );
    assert_eq!(db.store.mark_all_read(1).await.unwrap(), 2);
    assert_eq!(db.store.unread_count(1).await.unwrap(), 0);
    assert_eq!(db.store.unread_count(2).await.unwrap(), 1);
}

on_both_databases!(rows_round_trip_exactly, round_trip_body);
async fn round_trip_body(db: TestStore) {
    let data = json!({
        "note": "Überfällig ✓ 🔔 日本語 \"q\" \\ \n",
        "big": i64::MAX, "neg": i64::MIN, "float": 1.5, "none": null,
        "nested": {"list": [1, "two", {"three": 3}]}
    });
    let mut new = new_notification(9, Some("rt"));
    new.title = "Überfällig 🔔".into();
    new.data = data.clone();
    let before = Utc::now().trunc_subsecs(6);
    let created = db
        .store
        .create_notification(&new)
        .await
        .unwrap()
        .into_inner();
    let read = db
        .store
        .get_notification(created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, created);
    assert_eq!(read.data.as_ref().unwrap().0, data);
    assert_eq!(read.title, "Überfällig 🔔");
    assert!(!read.is_read);
    assert!(read.created_at >= before && read.created_at <= Utc::now());
    assert_eq!(read.created_at, read.created_at.trunc_subsecs(6));
}

on_both_databases!(tasks_round_trip, tasks_body);
async fn tasks_body(db: TestStore) {
    let deadline = (Utc::now() + Duration::hours(3)).trunc_subsecs(6);
    let task = db
        .store
        .create_task(&NewTask {
            title: "Report".into(),
            status: "in_progress".into(),
            deadline: Some(deadline),
            assignee_id: Some(3),
            created_by_id: Some(4),
        })
        .await
        .unwrap();
    let read = db.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(read, task);
    assert_eq!(read.deadline, Some(deadline));
    assert_eq!(read.created_at, read.updated_at);
    assert!(db.store.get_task(task.id + 1).await.unwrap().is_none());
}

/// SQLite runs in WAL mode with synchronous=FULL (2), on every pooled
/// connection.
#[tokio::test]
async fn sqlite_is_wal_with_full_sync() {
    let db = crate::helpers::fresh_store(herald::store::Backend::Sqlite).await;
    let Store::Sqlite(pool) = &db.store else {
        unreachable!()
    };
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2);
        conns.push(conn);
    }
}

/// A row committed by one process is there after that process is killed:
/// a child inserts and is killed with SIGKILL right after answering.
#[tokio::test]
async fn sqlite_commit_survives_kill() {
    let dir = tempfile::tempdir().unwrap();
    let herald = env!("CARGO_BIN_EXE_herald");
    let status = std::process::Command::new(herald)
        .arg("migrate")
        .env("HERALD_DATA_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("sqlite://{}", dir.path().join("herald.sqlite3").display());
    let options = herald::store::PoolOptions {
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
    };
    let store = Store::connect(&url, options).await.unwrap();
    let created = create(&store, 1, Some("durable")).await.into_inner();
    // Drop the pool without closing it cleanly: the WAL is not checkpointed.
    std::mem::forget(store);
    let reopened = Store::connect(&url, options).await.unwrap();
    let read = reopened.get_notification(created.id).await.unwrap();
    assert_eq!(read, Some(created));
}

/// Django migrating a table herald reads while herald runs: statements
/// PostgreSQL prepared before the change ("cached plan must not change
/// result type") are dropped and run again, on every pooled connection,
/// with no restart and no error reaching the caller.
#[tokio::test]
async fn a_table_changed_under_prepared_statements_is_read_again() {
    let db = crate::helpers::fresh_store(herald::store::Backend::Postgres).await;
    let Store::Postgres(pool) = &db.store else {
        unreachable!()
    };
    let row = create(&db.store, 5, Some("before")).await.into_inner();
    let task = db
        .store
        .create_task(&NewTask {
            title: "T".into(),
            status: "open".into(),
            deadline: None,
            assignee_id: Some(5),
            created_by_id: None,
        })
        .await
        .unwrap();
    // Every pooled connection prepares the statements.
    let reads = (0..10).map(|_| db.store.list_notifications_after(5, 0, 10));
    futures_util::future::try_join_all(reads).await.unwrap();
    for sql in [
        "ALTER TABLE notifications_notification ALTER COLUMN title TYPE varchar(500)",
        "ALTER TABLE notifications_notification ADD COLUMN read_at timestamptz NULL",
        "ALTER TABLE notifications_notification ALTER COLUMN user_id TYPE integer",
        "ALTER TABLE tasks_task ALTER COLUMN title TYPE varchar(400)",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let reads = (0..10).map(|_| db.store.list_notifications_after(5, 0, 10));
    for listed in futures_util::future::try_join_all(reads).await.unwrap() {
        assert_eq!(listed, vec![row.clone()]);
    }
    assert_eq!(db.store.get_task(task.id).await.unwrap(), Some(task));
    assert!(create(&db.store, 5, Some("after")).await.is_new());
}

/// `count` notifications for `user` made in one go, answering their ids.
async fn burst_of(store: &Store, user: i64, count: usize) -> Vec<i64> {
    let batch: Vec<_> = (0..count)
        .map(|i| NewNotification {
            user_id: user,
            title: format!("late {i}"),
            message: "m".into(),
            notification_type: "info".into(),
            data: json!({}),
            dedup_key: None,
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in batch.chunks(500) {
        let created = store.create_notifications(chunk).await.unwrap();
        ids.extend(created.answers.into_iter().map(|a| a.into_inner().id));
    }
    ids
}

// A resume from the newest row of a burst reads every row created within
// the lookback below it (a batch that committed late may be among them),
// not only the newest page's worth; past LATE_LIMIT it says it cannot vouch.
on_both_databases!(a_resume_reads_every_late_row_or_says_so, late_rows_body);
async fn late_rows_body(db: TestStore) {
    use herald::store::{LATE_LIMIT, Position};
    let lookback = Duration::seconds(60);
    let ids = burst_of(&db.store, 9, 600).await;
    let last = *ids.last().unwrap();
    let missed = db
        .store
        .missed_notifications(9, Position::After(last), lookback, 200)
        .await
        .unwrap();
    let read: Vec<i64> = missed.rows.iter().map(|row| row.id).collect();
    assert_eq!(read, ids[..599], "all 599 rows below the position");
    assert!(missed.recovered && !missed.more);
    let more = burst_of(&db.store, 9, LATE_LIMIT as usize).await;
    let last = *more.last().unwrap();
    let missed = db
        .store
        .missed_notifications(9, Position::After(last), lookback, 200)
        .await
        .unwrap();
    assert_eq!(
        missed.rows.len() as i64,
        LATE_LIMIT,
        "the newest LATE_LIMIT"
    );
    assert_eq!(missed.rows.last().unwrap().id, more[more.len() - 2]);
    assert!(
        !missed.recovered,
        "more below than one replay reads: not vouched for"
    );
    // A loss's replay reads from the first dropped id, with nothing below.
    let from = ids[100];
    let lost = db
        .store
        .missed_notifications(9, Position::From(from), lookback, 200)
        .await
        .unwrap();
    assert_eq!(lost.rows.first().unwrap().id, from);
    assert_eq!(lost.rows.len(), 200);
    assert!(lost.more && lost.recovered);
}
