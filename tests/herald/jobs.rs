//! Job handlers on both databases: their notifications, exactly once, and
//! published through the outbox even when the layer is down for a while.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use herald::config::{LayerBackend, Settings};
use herald::jobs::{Job, JobContext, JobError, JobInputError, parse};
use herald::layer::{ChannelLayer, GroupSendReport, LayerError, MemoryLayer, Message, RedisLayer};
use herald::publish::notification_group;
use herald::publish::outbox::Publisher;
use herald::store::{NewTask, Store, Task};
use serde_json::{Value, json};

use crate::helpers::{TestStore, on_both_databases};

const CLOSED: [&str; 2] = ["done", "cancelled"];

fn context(store: &Store, layer: Arc<dyn ChannelLayer>, job_id: &str) -> JobContext {
    JobContext {
        store: store.clone(),
        publisher: Publisher::new(store.clone(), layer),
        reminder_offsets: vec![Duration::from_secs(86_400), Duration::from_secs(3600)],
        closed_statuses: CLOSED.iter().map(|s| s.to_string()).collect(),
        notification_types: Default::default(),
        job_id: job_id.into(),
    }
}

fn memory_layer() -> Arc<MemoryLayer> {
    Arc::new(MemoryLayer::new(&Settings::defaults().layer).unwrap())
}

async fn task(
    store: &Store,
    title: &str,
    status: &str,
    deadline_in: Option<TimeDelta>,
    assignee: Option<i64>,
) -> Task {
    store
        .create_task(&NewTask {
            title: title.into(),
            status: status.into(),
            deadline: deadline_in.map(|d| Utc::now() + d),
            assignee_id: assignee,
            created_by_id: Some(100),
        })
        .await
        .unwrap()
}

/// A member channel of the user's group, to see what was published.
async fn listen(layer: &MemoryLayer, user_id: i64) -> String {
    let channel = layer.new_channel("specific").await.unwrap();
    layer
        .group_add(&notification_group(user_id), &channel)
        .await
        .unwrap();
    channel
}

async fn next_event(layer: &MemoryLayer, channel: &str) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(5), layer.receive(channel))
        .await
        .unwrap()
        .unwrap();
    Value::Object(message)
}

on_both_databases!(notify_creates_publishes_and_runs_once, notify_body);
async fn notify_body(db: TestStore) {
    let layer = memory_layer();
    let channel = listen(&layer, 5).await;
    let job = parse(
        "notify",
        json!({"user_id": 5, "title": "Hi", "message": "Hello", "notification_type": "generic"}),
    )
    .unwrap();
    let ctx = context(&db.store, layer.clone(), "job-1");
    let first = job.run(&ctx).await.unwrap();
    assert_eq!(
        (first.created, first.existing, first.published.sent),
        (1, 0, 1)
    );
    let event = next_event(&layer, &channel).await;
    assert_eq!(event["type"], "send_notification");
    assert_eq!(event["data"]["title"], "Hi");
    assert_eq!(event["data"]["data"], json!({}));
    let again = job.run(&ctx).await.unwrap();
    assert_eq!(
        (again.created, again.existing),
        (0, 1),
        "the same job twice: once"
    );
    assert_eq!(
        db.store
            .list_notifications_after(5, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
}

on_both_databases!(file_attached_skips_the_uploader, file_attached_body);
async fn file_attached_body(db: TestStore) {
    let layer = memory_layer();
    let t = task(&db.store, "Report", "open", None, Some(7)).await; // creator 100
    let payload = json!({"task_id": t.id, "file_id": 9, "file_name": "a.pdf", "uploaded_by": 7});
    let outcome = parse("file_attached", payload)
        .unwrap()
        .run(&context(&db.store, layer.clone(), "j"))
        .await
        .unwrap();
    assert_eq!(outcome.created, 1);
    assert!(
        db.store
            .list_notifications_after(7, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "uploader not told"
    );
    let rows = db.store.list_notifications_after(100, 0, 10).await.unwrap();
    assert_eq!(rows[0].title, "File Attached");
    assert_eq!(
        rows[0].message,
        "\"a.pdf\" was attached to task \"Report\"."
    );
    assert_eq!(rows[0].notification_type, "file_attached");
    assert_eq!(
        rows[0].data.as_ref().unwrap().0,
        json!({"task_id": t.id, "file_id": 9})
    );
    let by_other = json!({"task_id": t.id, "file_id": 10, "file_name": "b.pdf", "uploaded_by": 55});
    let outcome = parse("file_attached", by_other)
        .unwrap()
        .run(&context(&db.store, layer, "k"))
        .await
        .unwrap();
    assert_eq!(outcome.created, 2, "assignee and creator");
}

on_both_databases!(missing_task_is_a_retryable_error, missing_task_body);
async fn missing_task_body(db: TestStore) {
    let payload =
        json!({"task_id": 999_999, "old_status": "a", "new_status": "b", "changed_by": 1});
    let error = parse("status_changed", payload)
        .unwrap()
        .run(&context(&db.store, memory_layer(), "j"))
        .await
        .unwrap_err();
    assert!(matches!(error, JobError::TaskNotFound(999_999)));
    // The task may still be committed: retried, within the attempts.
    assert!(error.is_retryable());
}

on_both_databases!(status_changed_tells_others_with_reason, status_body);
async fn status_body(db: TestStore) {
    let t = task(&db.store, "Report", "open", None, Some(7)).await;
    let payload = json!({"task_id": t.id, "old_status": "open", "new_status": "review", "changed_by": 100, "reason": "ready"});
    parse("status_changed", payload)
        .unwrap()
        .run(&context(&db.store, memory_layer(), "s1"))
        .await
        .unwrap();
    let rows = db.store.list_notifications_after(7, 0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].message,
        "Task \"Report\" moved from open to review. Reason: ready"
    );
    assert_eq!(
        rows[0].data.as_ref().map(|data| &data.0),
        Some(
            &json!({"task_id": t.id, "old_status": "open", "new_status": "review", "reason": "ready"})
        )
    );
    assert_eq!(rows[0].notification_type, "status_changed");
    assert!(
        db.store
            .list_notifications_after(100, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

on_both_databases!(overdue_scan_once_per_deadline, overdue_body);
async fn overdue_body(db: TestStore) {
    let layer = memory_layer();
    let channel = listen(&layer, 1).await;
    let late = task(
        &db.store,
        "Report",
        "open",
        Some(TimeDelta::hours(-2)),
        Some(1),
    )
    .await;
    task(
        &db.store,
        "Closed",
        "done",
        Some(TimeDelta::hours(-2)),
        Some(1),
    )
    .await;
    task(
        &db.store,
        "Future",
        "open",
        Some(TimeDelta::hours(2)),
        Some(1),
    )
    .await;
    task(
        &db.store,
        "Nobody",
        "open",
        Some(TimeDelta::hours(-2)),
        None,
    )
    .await;
    let job: Job = parse("overdue_check", json!({})).unwrap();
    let ctx = context(&db.store, layer.clone(), "scan");
    let outcome = job.run(&ctx).await.unwrap();
    assert_eq!((outcome.created, outcome.published.sent), (1, 1));
    let event = next_event(&layer, &channel).await;
    let data = &event["data"];
    assert_eq!(data["title"], "Task Overdue");
    assert_eq!(data["message"], "Task \"Report\" is now overdue.");
    assert_eq!(data["notification_type"], "overdue");
    assert_eq!(data["data"], json!({"task_id": late.id}));
    assert_eq!(data["is_read"], false);
    assert_eq!(
        job.run(&ctx).await.unwrap().created,
        0,
        "once per task and deadline"
    );
    db.store
        .set_task_deadline(late.id, Some(Utc::now() - TimeDelta::minutes(5)))
        .await
        .unwrap();
    assert_eq!(
        job.run(&ctx).await.unwrap().created,
        1,
        "a moved deadline arms it again"
    );
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
}

on_both_databases!(deadline_reminders_per_window, reminders_body);
async fn reminders_body(db: TestStore) {
    let layer = memory_layer();
    let in_30_min = task(
        &db.store,
        "Soon",
        "open",
        Some(TimeDelta::minutes(30)),
        Some(1),
    )
    .await;
    let in_5_hours = task(
        &db.store,
        "Later",
        "open",
        Some(TimeDelta::hours(5)),
        Some(2),
    )
    .await;
    task(
        &db.store,
        "Far",
        "open",
        Some(TimeDelta::hours(30)),
        Some(3),
    )
    .await;
    task(
        &db.store,
        "Closed",
        "cancelled",
        Some(TimeDelta::minutes(30)),
        Some(4),
    )
    .await;
    let job = parse("deadline_reminder", json!({})).unwrap();
    let ctx = context(&db.store, layer, "scan");
    assert_eq!(job.run(&ctx).await.unwrap().created, 2);
    let soon = db.store.list_notifications_after(1, 0, 10).await.unwrap();
    assert_eq!(
        soon.len(),
        1,
        "only the 1 hour reminder for a task due in 30 minutes"
    );
    assert_eq!(soon[0].message, "Task \"Soon\" is due in less than 1 hour.");
    assert_eq!(soon[0].notification_type, "deadline_reminder");
    let later = db.store.list_notifications_after(2, 0, 10).await.unwrap();
    assert_eq!(
        later[0].message,
        "Task \"Later\" is due in less than 24 hours."
    );
    assert_eq!(
        later[0].data.as_ref().unwrap().0,
        json!({"task_id": in_5_hours.id})
    );
    assert_eq!(job.run(&ctx).await.unwrap().created, 0);
    assert!(
        db.store
            .list_notifications_after(3, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.store
            .list_notifications_after(4, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // One task only, after its deadline moved into the next window.
    db.store
        .set_task_deadline(in_30_min.id, Some(Utc::now() + TimeDelta::minutes(40)))
        .await
        .unwrap();
    let one = parse("deadline_reminder", json!({"task_id": in_30_min.id})).unwrap();
    assert_eq!(one.run(&ctx).await.unwrap().created, 1);
}

// Redis unreachable: rows are committed and kept in the outbox; once a
// working layer is there, a retry pass publishes them, with no new rows.
on_both_databases!(publish_failure_keeps_rows_and_retries, outbox_body);
async fn outbox_body(db: TestStore) {
    let mut dead = Settings::defaults().layer;
    dead.backend = LayerBackend::Redis;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    dead.hosts = vec![format!("redis://127.0.0.1:{port}")];
    let down: Arc<dyn ChannelLayer> = Arc::new(RedisLayer::new(&dead).unwrap());
    for i in 0..3 {
        let job = parse("notify", json!({"user_id": 8, "title": format!("n{i}"), "message": "m", "notification_type": "generic"})).unwrap();
        let outcome = job
            .run(&context(&db.store, down.clone(), &format!("j{i}")))
            .await
            .unwrap();
        assert_eq!((outcome.created, outcome.published.failed), (1, 1));
    }
    assert_eq!(db.store.outbox_len().await.unwrap(), 3);
    let layer = memory_layer();
    let channel = listen(&layer, 8).await;
    let publisher = Publisher::new(db.store.clone(), layer.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await; // the first retry is due after 1 s
    let outcome = publisher.retry_due(Duration::from_secs(1)).await.unwrap();
    assert_eq!((outcome.sent, outcome.failed), (3, 0));
    for i in 0..3 {
        assert_eq!(
            next_event(&layer, &channel).await["data"]["title"],
            format!("n{i}")
        );
    }
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
    assert_eq!(
        db.store
            .list_notifications_after(8, 0, 10)
            .await
            .unwrap()
            .len(),
        3,
        "no duplicates"
    );
}

/// A memory layer whose `group_send` to one group fails, as if that shard
/// of Redis were down.
struct OneGroupDown {
    inner: Arc<MemoryLayer>,
    down: String,
}

#[async_trait::async_trait]
impl ChannelLayer for OneGroupDown {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        self.inner.new_channel(prefix).await
    }
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        self.inner.send(channel, message).await
    }
    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.inner.group_add(group, channel).await
    }
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.inner.group_discard(group, channel).await
    }
    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        if group == self.down {
            return Err(LayerError::Unavailable("this group's shard is down".into()));
        }
        self.inner.group_send(group, message).await
    }
    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        self.inner.close_channel(channel).await
    }
}

// A batch whose publish partly fails: its outbox entry keeps only the rows
// that failed, so the retry pass sends those and nothing twice.
on_both_databases!(a_partial_publish_keeps_only_what_failed, partial_body);
async fn partial_body(db: TestStore) {
    let layer = memory_layer();
    let flaky: Arc<dyn ChannelLayer> = Arc::new(OneGroupDown {
        inner: layer.clone(),
        down: notification_group(2),
    });
    let (one, two) = (listen(&layer, 1).await, listen(&layer, 2).await);
    let jobs: Vec<(String, Job)> = [(1, "a"), (2, "b"), (1, "c"), (2, "d")]
        .into_iter()
        .map(|(user, title)| {
            let payload = json!({"user_id": user, "title": title, "message": "m", "notification_type": "generic"});
            (format!("job-{title}"), parse("notify", payload).unwrap())
        })
        .collect();
    let ctx = context(&db.store, flaky, "partial");
    let outcomes = herald::jobs::run_many(&ctx, &jobs).await;
    let failed: Vec<usize> = outcomes
        .iter()
        .map(|outcome| outcome.as_ref().unwrap().published.failed)
        .collect();
    assert_eq!(failed, [0, 1, 0, 1]);
    for title in ["a", "c"] {
        assert_eq!(next_event(&layer, &one).await["data"]["title"], title);
    }
    assert_eq!(
        db.store.outbox_len().await.unwrap(),
        2,
        "the two that failed"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await; // the first retry is due after 1 s
    let publisher = Publisher::new(db.store.clone(), layer.clone());
    let outcome = publisher.retry_due(Duration::from_secs(1)).await.unwrap();
    assert_eq!((outcome.sent, outcome.failed), (2, 0));
    for title in ["b", "d"] {
        assert_eq!(next_event(&layer, &two).await["data"]["title"], title);
    }
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
    let again = tokio::time::timeout(Duration::from_millis(200), layer.receive(&one)).await;
    assert!(again.is_err(), "nothing sent twice: {again:?}");
}

on_both_databases!(batch_create_answers_in_order, batch_body);
async fn batch_body(db: TestStore) {
    let new = |user: i64, key: &str| herald::store::NewNotification {
        user_id: user,
        title: key.into(),
        message: "m".into(),
        notification_type: "t".into(),
        data: json!({}),
        dedup_key: Some(key.into()),
    };
    db.store.create_notification(&new(1, "old")).await.unwrap();
    let batch = vec![new(1, "a"), new(1, "old"), new(2, "a"), new(1, "a")];
    let created = db.store.create_notifications(&batch).await.unwrap();
    let answers = created.answers;
    let shape: Vec<(bool, String)> = answers
        .iter()
        .map(|a| (a.is_new(), a.clone().into_inner().title))
        .collect();
    assert_eq!(
        shape,
        vec![
            (true, "a".into()),
            (false, "old".into()),
            (true, "a".into()),
            (false, "a".into())
        ]
    );
    assert_eq!(
        answers[0].clone().into_inner().id,
        answers[3].clone().into_inner().id
    );
    // The two new rows wait under one outbox entry; "old" under its own.
    let new_ids: Vec<i64> = created.unpublished.rows.iter().map(|row| row.id).collect();
    assert_eq!(
        new_ids,
        [
            answers[0].clone().into_inner().id,
            answers[2].clone().into_inner().id
        ]
    );
    assert!(created.unpublished.entry.is_some());
    assert_eq!(db.store.outbox_len().await.unwrap(), 3);
    let due = db
        .store
        .outbox_due(1000, chrono::TimeDelta::seconds(60))
        .await
        .unwrap();
    assert!(due.is_empty(), "a new entry waits out its grace: {due:?}");
}

#[test]
fn bad_submissions_name_the_problem() {
    let unknown = parse("send_fax", json!({})).unwrap_err();
    assert!(matches!(unknown, JobInputError::UnknownKind { .. }));
    assert!(
        unknown.to_string().contains("notify") && unknown.to_string().contains("overdue_check")
    );
    let bad = parse(
        "file_attached",
        json!({"task_id": "x", "file_id": 1, "file_name": "f", "uploaded_by": 2}),
    )
    .unwrap_err();
    assert!(
        matches!(&bad, JobInputError::InvalidPayload { field, .. } if field == "task_id"),
        "{bad}"
    );
    let missing = parse(
        "notify",
        json!({"user_id": 1, "title": "t", "message": "m"}),
    )
    .unwrap_err();
    assert!(
        missing.to_string().contains("notification_type"),
        "{missing}"
    );
    let extra = parse("overdue_check", json!({"surprise": 1})).unwrap_err();
    assert!(extra.to_string().contains("surprise"), "{extra}");
}

/// A run shows up in the Prometheus text: jobs by kind and outcome, the
/// duration histogram, notifications created and published.
#[tokio::test]
async fn runs_are_counted_in_metrics() {
    let handle = herald::telemetry::metrics::prometheus();
    let db = crate::helpers::fresh_store(herald::store::Backend::Sqlite).await;
    let job = parse(
        "notify",
        json!({"user_id": 1, "title": "t", "message": "m", "notification_type": "g"}),
    )
    .unwrap();
    job.run(&context(&db.store, memory_layer(), "metrics-1"))
        .await
        .unwrap();
    let missing = parse(
        "file_attached",
        json!({"task_id": 424_242, "file_id": 1, "file_name": "f", "uploaded_by": 1}),
    )
    .unwrap();
    assert!(
        missing
            .run(&context(&db.store, memory_layer(), "metrics-2"))
            .await
            .is_err()
    );
    let text = handle.render();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} in:\n{text}"))
    };
    assert!(value("herald_jobs_total{kind=\"notify\",outcome=\"done\"}") >= 1.0);
    assert!(value("herald_jobs_total{kind=\"file_attached\",outcome=\"failed\"}") >= 1.0);
    assert!(value("herald_job_duration_seconds_count{kind=\"notify\"}") >= 1.0);
    assert!(value("herald_notifications_created_total") >= 1.0);
    assert!(value("herald_notifications_published_total") >= 1.0);
    assert!(text.contains("# HELP herald_jobs_total"));
}

on_both_databases!(
    a_scan_past_the_parameter_limit_commits_and_publishes_all,
    large_scan_body
);
async fn large_scan_body(db: TestStore) {
    // 25,000 overdue tasks: their outbox rows (3 parameters each) exceed what
    // one statement binds on either database.
    const TASKS: i64 = 25_000;
    let past = (Utc::now() - TimeDelta::hours(1)).naive_utc();
    let seed = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO tasks_task (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
         SELECT 'T' || i, 'open', $2, i, NULL, $2, $2 FROM n";
    match &db.store {
        Store::Sqlite(pool) => {
            sqlx::query(seed)
                .bind(TASKS)
                .bind(past)
                .execute(pool)
                .await
                .unwrap();
        }
        Store::Postgres(pool) => {
            let past = past.and_utc();
            let seed = seed.replace("SELECT 1 UNION", "SELECT 1::bigint UNION");
            sqlx::query(sqlx::AssertSqlSafe(seed))
                .bind(TASKS)
                .bind(past)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    let outcome = Job::OverdueCheck(herald::jobs::OverdueCheck {})
        .run(&context(&db.store, memory_layer(), "big"))
        .await
        .unwrap();
    assert_eq!(outcome.created, TASKS as usize);
    assert_eq!(outcome.published.sent, TASKS as usize);
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
}

on_both_databases!(
    each_kind_writes_the_configured_notification_type,
    configured_types_body
);
async fn configured_types_body(db: TestStore) {
    let mut ctx = context(&db.store, memory_layer(), "types");
    ctx.notification_types = herald::config::NotificationTypes {
        deadline_reminder: "due_soon".into(),
        overdue: "late".into(),
        file_attached: "attachment".into(),
        status_changed: "moved".into(),
    };
    let due = task(
        &db.store,
        "Due",
        "open",
        Some(TimeDelta::minutes(30)),
        Some(11),
    )
    .await;
    let late = task(
        &db.store,
        "Late",
        "open",
        Some(TimeDelta::hours(-1)),
        Some(12),
    )
    .await;
    let jobs = [
        ("deadline_reminder", json!({"task_id": due.id})),
        ("overdue_check", json!({})),
        (
            "file_attached",
            json!({"task_id": due.id, "file_id": 5, "file_name": "a.pdf", "uploaded_by": 100}),
        ),
        (
            "status_changed",
            json!({"task_id": late.id, "old_status": "open", "new_status": "review", "changed_by": 100}),
        ),
    ];
    for (kind, payload) in jobs {
        parse(kind, payload).unwrap().run(&ctx).await.unwrap();
    }
    let types = |user| {
        let store = db.store.clone();
        async move {
            let rows = store.list_notifications_after(user, 0, 10).await.unwrap();
            rows.into_iter()
                .map(|row| row.notification_type)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(types(11).await, ["due_soon", "attachment"]);
    assert_eq!(types(12).await, ["late", "moved"]);
}

/// A layer that counts every notification id it is asked to send, slowly,
/// so two publishers' passes overlap.
struct CountingLayer {
    inner: Arc<MemoryLayer>,
    sent: std::sync::Mutex<std::collections::HashMap<i64, usize>>,
}

#[async_trait::async_trait]
impl ChannelLayer for CountingLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        self.inner.new_channel(prefix).await
    }
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        self.inner.send(channel, message).await
    }
    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.inner.group_add(group, channel).await
    }
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.inner.group_discard(group, channel).await
    }
    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let id = message["data"]["id"].as_i64().unwrap();
        *self.sent.lock().unwrap().entry(id).or_default() += 1;
        self.inner.group_send(group, message).await
    }
    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        self.inner.close_channel(channel).await
    }
}

// Stranded outbox entries (their job's own publish never happened) are
// claimed by one retry pass: two processes' passes at once send each
// notification once.
on_both_databases!(retry_passes_claim_their_entries, claim_body);
async fn claim_body(db: TestStore) {
    let new = |i: usize| herald::store::NewNotification {
        user_id: 5,
        title: format!("n{i}"),
        message: "m".into(),
        notification_type: "t".into(),
        data: json!({}),
        dedup_key: Some(format!("claim-{i}")),
    };
    let mut ids = Vec::new();
    for group in 0..40 {
        let batch: Vec<_> = (0..5).map(|i| new(group * 5 + i)).collect();
        let created = db.store.create_notifications(&batch).await.unwrap();
        let rows: Vec<i64> = created.unpublished.rows.iter().map(|r| r.id).collect();
        // Due now, as after a crash past the grace period.
        let entry = created.unpublished.entry.unwrap();
        let past = Utc::now() - TimeDelta::seconds(1);
        db.store.outbox_retry_at(entry, &rows, past).await.unwrap();
        ids.extend(rows);
    }
    let layer = Arc::new(CountingLayer {
        inner: memory_layer(),
        sent: Default::default(),
    });
    let publisher = |layer: Arc<CountingLayer>| Publisher::new(db.store.clone(), layer);
    let (a, b) = (publisher(layer.clone()), publisher(layer.clone()));
    let (first, second) = tokio::join!(
        a.retry_due(Duration::from_secs(1)),
        b.retry_due(Duration::from_secs(1))
    );
    let total = first.unwrap().sent + second.unwrap().sent;
    assert_eq!(total, ids.len());
    let sent = layer.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), ids.len());
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
}

// The overdue scan after its first pass reads only tasks whose deadline
// passed, or that changed, since: a task reopened with an old deadline is
// still noticed, tasks notified before are neither notified again nor
// given an id (PostgreSQL's sequence does not move).
on_both_databases!(overdue_passes_follow_new_overdue_tasks, incremental_body);
async fn incremental_body(db: TestStore) {
    let ctx = context(&db.store, memory_layer(), "scan");
    let overdue = || async {
        parse("overdue_check", json!({}))
            .unwrap()
            .run(&ctx)
            .await
            .unwrap()
    };
    for i in 0..50 {
        let title = format!("old {i}");
        task(
            &db.store,
            &title,
            "open",
            Some(TimeDelta::hours(-3)),
            Some(1),
        )
        .await;
    }
    let done = task(
        &db.store,
        "closed",
        "done",
        Some(TimeDelta::hours(-3)),
        Some(2),
    )
    .await;
    assert_eq!(overdue().await.created, 50, "the first pass is full");
    let probe = |key: &str| herald::store::NewNotification {
        user_id: 9,
        title: key.into(),
        message: "m".into(),
        notification_type: "t".into(),
        data: json!({}),
        dedup_key: Some(key.into()),
    };
    let before = db
        .store
        .create_notification(&probe("a"))
        .await
        .unwrap()
        .into_inner()
        .id;
    for _ in 0..3 {
        assert_eq!(overdue().await.created, 0);
    }
    let after = db
        .store
        .create_notification(&probe("b"))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(after, before + 1, "no id burned by the passes in between");

    // Reopened: its deadline is old, its updated_at new.
    db.store.set_task_status(done.id, "open").await.unwrap();
    task(
        &db.store,
        "new",
        "open",
        Some(TimeDelta::seconds(-1)),
        Some(3),
    )
    .await;
    assert_eq!(overdue().await.created, 2);
    for user in [2, 3] {
        assert_eq!(db.store.unread_count(user).await.unwrap(), 1, "user {user}");
    }
}

/// A payload is a JSON object (serde would read an array as the fields in
/// order); an integer field may be sent as a float with no fraction, as
/// JSON Schema's `integer` allows; `data` is kept as given.
#[test]
fn payloads_are_objects_and_integral_floats_are_integers() {
    for (kind, payload) in [
        ("notify", json!([5, "t", "m", "n"])),
        ("overdue_check", json!([])),
        ("deadline_reminder", json!([7])),
        ("overdue_check", Value::Null),
    ] {
        let error = parse(kind, payload).unwrap_err();
        assert!(
            matches!(&error, JobInputError::InvalidPayload { field, .. } if field.is_empty()),
            "{kind}: {error:?}"
        );
    }
    let job = parse(
        "notify",
        json!({"user_id": 5.0, "title": "t", "message": "m", "notification_type": "n",
               "data": {"ratio": 1.0}}),
    )
    .unwrap();
    let Job::Notify(notify) = job else {
        panic!("a notify job")
    };
    assert_eq!(notify.user_id, 5);
    assert!(
        notify.data.unwrap()["ratio"].is_f64(),
        "data is kept as given"
    );
    let file = parse(
        "file_attached",
        json!({"task_id": 1e3, "file_id": 2, "file_name": "f", "uploaded_by": 3}),
    );
    assert!(matches!(file, Ok(Job::FileAttached(f)) if f.task_id == 1000));
    assert!(
        parse(
            "notify",
            json!({"user_id": 5.5, "title": "t", "message": "m",
        "notification_type": "n"})
        )
        .is_err()
    );
}
