//! Jobs through the queues (apalis on SQLite, PostgreSQL and Redis) and the
//! worker: they run and publish, a failing job retries with backoff and
//! ends dead with its error, `retry_dead` runs it again, a dedup key queues
//! once. Each test runs on every queue backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use herald::config::{QueueBackend, Settings};
use herald::layer::{ChannelLayer, MemoryLayer};
use herald::publish::notification_group;
use herald::queue::{JobQueue, Submission, retry_dead, submit, submit_many};
use herald::store::{Backend, JobState, NewTask, Store};
use herald::worker::Worker;
use serde_json::{Value, json};

use crate::helpers::{TestStore, fresh_store_at};

/// A store, settings pointing at it, and a queue of the test's own.
pub(crate) struct QueueEnv {
    pub(crate) db: TestStore,
    pub(crate) settings: Settings,
    _data: tempfile::TempDir,
}

#[derive(Clone, Copy)]
pub(crate) enum Case {
    Sqlite,
    Postgres,
    Redis,
}

pub(crate) async fn queue_env(case: Case) -> QueueEnv {
    // Warnings and herald's own events show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,herald=info")
        .try_init();
    let backend = match case {
        Case::Sqlite => Backend::Sqlite,
        Case::Postgres | Case::Redis => Backend::Postgres,
    };
    let (db, url) = fresh_store_at(backend).await;
    let data = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.database.url = url;
    settings.data_dir = data.path().to_path_buf();
    settings.secret_key = Some("queue-test-secret".to_string().into());
    let queue = &mut settings.queue;
    queue.backend = match case {
        Case::Redis => QueueBackend::Redis,
        _ => QueueBackend::Database,
    };
    queue.prefix = format!("herald-t-{}", uuid::Uuid::new_v4().simple());
    queue.poll_interval = Duration::from_millis(20);
    queue.heartbeat_interval = Duration::from_secs(1);
    queue.retry_base = Duration::from_millis(20);
    queue.retry_max = Duration::from_millis(100);
    queue.attempts.insert("file_attached".into(), 3);
    QueueEnv {
        db,
        settings,
        _data: data,
    }
}

/// Declares `mod $name { sqlite, postgres, redis }` running `$body(Case)`.
macro_rules! on_every_queue {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::Case;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body(Case::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body(Case::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$body(Case::Redis).await
            }
        }
    };
}

pub(crate) fn submission(kind: &str, payload: Value) -> Submission {
    Submission {
        kind: kind.into(),
        payload,
        run_at: None,
        dedup_key: None,
    }
}

/// Waits until job `id` is in `state`, failing after 30 s with its record.
pub(crate) async fn wait_for_state(store: &Store, id: &str, state: JobState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = store.get_job(id).await.unwrap().expect("job recorded");
        if job.state == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never reached {state:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An open task without a deadline, assigned to user 7.
async fn open_task(store: &Store, title: &str, created_by: Option<i64>) -> herald::store::Task {
    let task = NewTask {
        title: title.into(),
        status: "open".into(),
        deadline: None,
        assignee_id: Some(7),
        created_by_id: created_by,
    };
    store.create_task(&task).await.unwrap()
}

struct Running {
    env: QueueEnv,
    queue: JobQueue,
    layer: Arc<dyn ChannelLayer>,
    worker: Worker,
}

async fn start(case: Case) -> Running {
    let env = queue_env(case).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let worker = Worker::start(
        &env.settings,
        env.db.store.clone(),
        layer.clone(),
        queue.clone(),
    )
    .await
    .unwrap();
    Running {
        env,
        queue,
        layer,
        worker,
    }
}

on_every_queue!(jobs_run_and_reach_the_users_group, run_body);
async fn run_body(case: Case) {
    let r = start(case).await;
    let store = &r.env.db.store;
    let channel = r.layer.new_channel("specific").await.unwrap();
    r.layer
        .group_add(&notification_group(7), &channel)
        .await
        .unwrap();
    let task = open_task(store, "Report", Some(8)).await;
    let attached =
        json!({"task_id": task.id, "file_id": 3, "file_name": "a.pdf", "uploaded_by": 9});
    let notify =
        json!({"user_id": 7, "title": "Hello", "message": "m", "notification_type": "info"});
    let mut ids = Vec::new();
    for (kind, payload) in [("file_attached", attached), ("notify", notify)] {
        let done = submit(store, &r.queue, submission(kind, payload))
            .await
            .unwrap();
        assert_eq!((done.existing, done.state), (false, JobState::Queued));
        ids.push(done.id);
    }
    for id in &ids {
        wait_for_state(store, id, JobState::Done).await;
        assert_eq!(store.get_job(id).await.unwrap().unwrap().attempts, 1);
    }
    let for_7 = store.list_notifications_after(7, 0, 100).await.unwrap();
    let for_8 = store.list_notifications_after(8, 0, 100).await.unwrap();
    assert_eq!((for_7.len(), for_8.len()), (2, 1));
    let mut titles = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(5), r.layer.receive(&channel))
            .await
            .expect("published")
            .unwrap();
        assert_eq!(message["type"], "send_notification");
        titles.push(message["data"]["title"].as_str().unwrap().to_string());
    }
    titles.sort();
    assert_eq!(titles, ["File Attached", "Hello"]);
    r.worker.shutdown(Duration::from_secs(5)).await;
}

on_every_queue!(a_submitted_batch_runs_every_job_once, submitted_batch_body);
async fn submitted_batch_body(case: Case) {
    let r = start(case).await;
    let store = &r.env.db.store;
    let task = open_task(store, "Report", Some(8)).await;
    // 1,200 jobs of two kinds: two queue writes for file_attached (over one
    // chunk of 1,000), one for notify, and a later one.
    let mut jobs: Vec<Submission> = (0..1200)
        .map(|i| match i % 3 {
            0 => submission(
                "notify",
                json!({"user_id": 9, "title": format!("n{i}"),
                "message": "m", "notification_type": "info"}),
            ),
            _ => submission(
                "file_attached",
                json!({"task_id": task.id, "file_id": i,
                "file_name": "a.pdf", "uploaded_by": 1}),
            ),
        })
        .collect();
    jobs[5].run_at = Some(chrono::Utc::now() + chrono::TimeDelta::seconds(2));
    let done = submit_many(store, &r.queue, jobs).await.unwrap();
    assert_eq!(done.len(), 1200);
    let ids: HashSet<&str> = done.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids.len(), 1200, "every job has its own id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while store.count_jobs(JobState::Done).await.unwrap() < 1200 {
        if tokio::time::Instant::now() > deadline {
            let mut states = Vec::new();
            for state in [
                JobState::Queued,
                JobState::Retrying,
                JobState::Done,
                JobState::Dead,
            ] {
                states.push((state, store.count_jobs(state).await.unwrap()));
            }
            let failed = store.jobs_in_state(JobState::Dead, 1).await.unwrap();
            let retrying = store.jobs_in_state(JobState::Retrying, 1).await.unwrap();
            panic!("the batch never ran whole: {states:?}, {failed:?} {retrying:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (for_9, for_7) = (store.unread_count(9).await, store.unread_count(7).await);
    assert_eq!((for_9.unwrap(), for_7.unwrap()), (400, 800), "one per job");
    for id in &ids {
        assert_eq!(store.get_job(id).await.unwrap().unwrap().attempts, 1);
    }
    r.worker.shutdown(Duration::from_secs(5)).await;
}

/// The apalis-redis config of the `kind` queue and a connection to its Redis.
async fn redis_queue(
    env: &QueueEnv,
    kind: &str,
) -> (apalis_redis::Config, redis::aio::MultiplexedConnection) {
    let config = apalis_redis::Config::default().queue(env.settings.queue.queue_name(kind));
    let client = redis::Client::open(env.settings.queue_redis_url().unwrap()).unwrap();
    (
        config,
        client.get_multiplexed_async_connection().await.unwrap(),
    )
}

/// file_attached entries waiting in the queue, not fetched by any worker:
/// pending apalis rows, or the Redis active list and scheduled set.
async fn waiting(env: &QueueEnv) -> i64 {
    if env.settings.queue.backend == QueueBackend::Redis {
        let (config, mut conn) = redis_queue(env, "file_attached").await;
        let (active, scheduled): (i64, i64) = redis::pipe()
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await
            .unwrap();
        return active + scheduled;
    }
    if let Store::Sqlite(_) = &env.db.store {
        let path = env.settings.data_dir.join("queue.sqlite3");
        let url = format!("sqlite://{}", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let sql = "SELECT count(*) FROM Jobs WHERE status = 'Pending' AND job_type = ?";
        let count = sqlx::query_scalar(sql)
            .bind(env.settings.queue.queue_name("file_attached"))
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        return count;
    }
    let Store::Postgres(pool) = &env.db.store else {
        unreachable!("SQLite or PostgreSQL queue")
    };
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Pending' AND job_type = $1",
    )
    .bind(env.settings.queue.queue_name("file_attached"))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Holds the store's write lock (PostgreSQL: the notifications table's;
/// SQLite: the database's) until released, so jobs get stuck writing.
enum WriteLock {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl WriteLock {
    async fn take(store: &Store) -> WriteLock {
        match store {
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("LOCK TABLE notifications_notification IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                WriteLock::Postgres(tx)
            }
            Store::Sqlite(pool) => {
                let mut conn = pool.acquire().await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                WriteLock::Sqlite(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Postgres(tx) => tx.rollback().await.unwrap(),
            WriteLock::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
            }
        }
    }
}

/// Shutdown past its deadline with jobs stuck (their notification insert
/// waits on a table lock): what the worker holds goes back to the queue at
/// once, and another worker runs every job, each once, long before the
/// stopped worker's heartbeat could expire.
async fn put_back_body(case: Case) {
    let mut env = queue_env(case).await;
    env.settings.queue.heartbeat_interval = Duration::from_secs(60);
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let store = env.db.store.clone();
    let task = open_task(&store, "Report", Some(8)).await;
    let jobs = (0..50)
        .map(|i| {
            let payload =
                json!({"task_id": task.id, "file_id": i, "file_name": "a.pdf", "uploaded_by": 1});
            submission("file_attached", payload)
        })
        .collect();
    submit_many(&store, &queue, jobs).await.unwrap();
    let lock = WriteLock::take(&store).await;
    let start = || {
        let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
        Worker::start(&env.settings, store.clone(), layer, queue.clone())
    };
    let stuck = start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while waiting(&env).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never fetched the jobs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = stuck.shutdown(Duration::from_millis(300)).await;
    assert_eq!(
        waiting(&env).await,
        50,
        "everything held went back at the deadline: {stopped:?}"
    );
    lock.release().await;

    let worker = start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.count_jobs(JobState::Done).await.unwrap() < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "put-back jobs never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (for_7, for_8) = (store.unread_count(7).await, store.unread_count(8).await);
    assert_eq!(
        (for_7.unwrap(), for_8.unwrap()),
        (50, 50),
        "each job's notices once"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Makes apalis give up on every `kind` entry, as its 25th failed try does:
/// on Redis the entries move to the queue's dead set, on the SQL queues
/// they are left `Failed` with their attempts used up. How many there were.
async fn give_up_all(env: &QueueEnv, kind: &str) -> u64 {
    use redis::AsyncCommands;
    let name = env.settings.queue.queue_name(kind);
    const GIVE_UP: &str = "UPDATE {jobs} SET status = 'Failed', attempts = max_attempts \
         WHERE job_type = $1";
    if env.settings.queue.backend == QueueBackend::Redis {
        let (config, mut conn) = redis_queue(env, kind).await;
        let mut entries: Vec<String> = conn.lrange(config.active_jobs_list(), 0, -1).await.unwrap();
        let scheduled: Vec<String> = conn
            .zrange(config.scheduled_jobs_set(), 0, -1)
            .await
            .unwrap();
        entries.extend(scheduled);
        redis::pipe()
            .del(config.active_jobs_list())
            .del(config.scheduled_jobs_set())
            .sadd(config.dead_jobs_set(), &entries)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        return entries.len() as u64;
    }
    match &env.db.store {
        Store::Sqlite(_) => {
            let path = env.settings.data_dir.join("queue.sqlite3");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let sql = GIVE_UP.replace("{jobs}", "Jobs");
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            done.rows_affected()
        }
        Store::Postgres(pool) => {
            let sql = GIVE_UP.replace("{jobs}", "apalis.jobs");
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .execute(pool)
                .await
                .unwrap();
            done.rows_affected()
        }
    }
}

// apalis gives up on an entry after 25 failed tries (the ledger could not
// be written): a job the ledger still has open runs again; an entry whose
// job ended is only deleted.
on_every_queue!(
    jobs_whose_entries_apalis_gave_up_on_run_again,
    given_up_body
);
async fn given_up_body(case: Case) {
    let env = queue_env(case).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let store = env.db.store.clone();
    let notify = |title: &str| {
        let payload =
            json!({"user_id": 5, "title": title, "message": "m", "notification_type": "info"});
        submission("notify", payload)
    };
    let open = submit(&store, &queue, notify("open")).await.unwrap();
    let ended = submit(&store, &queue, notify("ended")).await.unwrap();
    store
        .finish_jobs_done(std::slice::from_ref(&ended.id))
        .await
        .unwrap();
    assert_eq!(
        give_up_all(&env, "notify").await,
        2,
        "both entries given up"
    );

    let revived = herald::worker::revive_given_up(&store, &queue)
        .await
        .unwrap();
    assert_eq!(revived, 1, "only the job that has not ended");
    assert!(
        queue.given_up(10).await.unwrap().is_empty(),
        "no given-up entry is left"
    );
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let worker = Worker::start(&env.settings, store.clone(), layer, queue.clone())
        .await
        .unwrap();
    wait_for_state(&store, &open.id, JobState::Done).await;
    let rows = store.list_notifications_after(5, 0, 10).await.unwrap();
    let titles: Vec<&str> = rows.iter().map(|row| row.title.as_str()).collect();
    assert_eq!(titles, ["open"]);
    assert_eq!(store.get_job(&open.id).await.unwrap().unwrap().attempts, 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

on_every_queue!(
    stuck_jobs_are_put_back_at_the_shutdown_deadline,
    put_back_body
);

on_every_queue!(
    a_failing_job_retries_then_is_dead_and_can_be_retried,
    dead_body
);
async fn dead_body(case: Case) {
    let r = start(case).await;
    let store = &r.env.db.store;
    // Task 1 does not exist yet: every attempt fails.
    let payload = json!({"task_id": 1, "file_id": 3, "file_name": "a.pdf", "uploaded_by": 9});
    let done = submit(store, &r.queue, submission("file_attached", payload))
        .await
        .unwrap();
    wait_for_state(store, &done.id, JobState::Dead).await;
    let job = store.get_job(&done.id).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.max_attempts), (3, 3));
    assert_eq!(job.last_error.as_deref(), Some("task 1 does not exist"));
    let dead = store.jobs_in_state(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.iter().map(|j| &j.id).collect::<Vec<_>>(), [&done.id]);
    // Now the task exists; a retry runs the job again, to completion.
    let task = open_task(store, "Late", None).await;
    assert_eq!(task.id, 1);
    retry_dead(store, &r.queue, &done.id).await.unwrap();
    wait_for_state(store, &done.id, JobState::Done).await;
    assert_eq!(
        store
            .list_notifications_after(7, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    // Only dead jobs are retried.
    let again = retry_dead(store, &r.queue, &done.id).await.unwrap_err();
    assert!(again.to_string().contains("not dead"), "{again}");
    r.worker.shutdown(Duration::from_secs(5)).await;
}

on_every_queue!(a_repeated_dedup_key_queues_once, dedup_body);
async fn dedup_body(case: Case) {
    let r = start(case).await;
    let store = &r.env.db.store;
    let payload =
        json!({"user_id": 5, "title": "Once", "message": "m", "notification_type": "info"});
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut once = submission("notify", payload.clone());
        once.dedup_key = Some("welcome-5".into());
        answers.push(submit(store, &r.queue, once).await.unwrap());
    }
    assert!(!answers[0].existing);
    assert!(
        answers[1..]
            .iter()
            .all(|a| a.existing && a.id == answers[0].id)
    );
    wait_for_state(store, &answers[0].id, JobState::Done).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store
            .list_notifications_after(5, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.count_jobs(JobState::Done).await.unwrap(), 1);
    r.worker.shutdown(Duration::from_secs(5)).await;
}

on_every_queue!(
    a_batch_ends_its_jobs_together_and_fails_only_its_bad_one,
    batch_body
);
async fn batch_body(case: Case) {
    use herald::jobs::JobContext;
    use herald::publish::outbox::Publisher;
    use herald::queue::Queued;
    use herald::worker::{Attempted, Runner, attempt_many};

    let env = queue_env(case).await;
    let store = &env.db.store;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let runner = Runner {
        ctx: JobContext {
            store: store.clone(),
            publisher: Publisher::new(store.clone(), layer),
            reminder_offsets: env.settings.worker.reminder_offsets.clone(),
            closed_statuses: env.settings.worker.closed_statuses.clone(),
            notification_types: env.settings.worker.notification_types.clone(),
            job_id: String::new(),
        },
        queue: queue.clone(),
        results: None,
        track_started: None,
    };
    let task = open_task(store, "Batch", Some(8)).await;
    // 20 jobs on the task, one on a task that does not exist, and the first
    // one's and the bad one's entries twice (a queue that delivered them
    // again).
    let mut items = Vec::new();
    for file in 0..21 {
        let task_id = if file == 20 { task.id + 1000 } else { task.id };
        let payload = json!({"task_id": task_id, "file_id": file, "file_name": "f.pdf",
            "uploaded_by": 9});
        let job = herald::jobs::parse("file_attached", payload.clone()).unwrap();
        let queued = submit(store, &queue, submission("file_attached", payload))
            .await
            .unwrap();
        items.push(Queued::new(queued.id, job, None));
    }
    items.push(items[0].clone());
    items.push(items[20].clone());
    let answers: Vec<Attempted> = attempt_many(&runner, items.clone())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        answers[..20].iter().all(|a| *a == Attempted::Done),
        "{answers:?}"
    );
    let missing = format!("task {} does not exist", task.id + 1000);
    assert_eq!(
        answers[20],
        Attempted::Retrying {
            attempt: 1,
            error: missing.clone()
        }
    );
    assert_eq!(
        answers[21],
        Attempted::Skipped,
        "the repeated entry runs once"
    );
    for item in &items[..20] {
        let job = store.get_job(&item.id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Done, 1), "{job:?}");
    }
    let bad = store.get_job(&items[20].id).await.unwrap().unwrap();
    assert_eq!((bad.state, bad.attempts), (JobState::Retrying, 1));
    assert_eq!(bad.last_error.as_deref(), Some(missing.as_str()));
    let for_7 = store.list_notifications_after(7, 0, 100).await.unwrap();
    let for_8 = store.list_notifications_after(8, 0, 100).await.unwrap();
    assert_eq!(
        (for_7.len(), for_8.len()),
        (20, 20),
        "each job's notices once"
    );
    assert_eq!(store.outbox_len().await.unwrap(), 0, "all published");
    // The same entries again: the ended jobs are skipped, the bad one fails
    // its second attempt.
    let again = attempt_many(&runner, items[..21].to_vec()).await;
    assert!(
        again[..20]
            .iter()
            .all(|a| matches!(a, Ok(Attempted::Skipped)))
    );
    assert!(matches!(
        again[20],
        Ok(Attempted::Retrying { attempt: 2, .. })
    ));
    queue.close().await;
}

on_every_queue!(done_jobs_are_pruned_from_ledger_and_queue, prune_body);
async fn prune_body(case: Case) {
    let r = start(case).await;
    let store = &r.env.db.store;
    let payload =
        json!({"user_id": 5, "title": "Old", "message": "m", "notification_type": "info"});
    let mut old = submission("notify", payload);
    old.dedup_key = Some("old-5".into());
    let done = submit(store, &r.queue, old).await.unwrap();
    wait_for_state(store, &done.id, JobState::Done).await;
    // Kept while younger than keep_done.
    let a_day_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    assert_eq!(store.prune_done_jobs(a_day_ago).await.unwrap(), 0);
    // apalis acknowledges the entry just after the job ends.
    let mut pruned = 0;
    for _ in 0..100 {
        pruned = r.queue.prune_finished(Duration::ZERO).await.unwrap();
        if pruned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pruned, 1, "the finished queue entry");
    if let Case::Redis = case {
        // Nothing of it is left: its data, its metadata, its done-set id.
        let (config, mut conn) = redis_queue(&r.env, "notify").await;
        let (data, done): (i64, i64) = redis::pipe()
            .hlen(config.job_data_hash())
            .scard(config.done_jobs_set())
            .query_async(&mut conn)
            .await
            .unwrap();
        let pattern = format!("{}:*", config.job_meta_hash());
        let mut meta: Vec<String> = Vec::new();
        let mut keys = redis::AsyncCommands::scan_match(&mut conn, &pattern)
            .await
            .unwrap();
        while let Some(key) = futures_util::StreamExt::next(&mut keys).await {
            meta.push(key.unwrap());
        }
        assert_eq!((data, done, meta.len()), (0, 0, 0), "{meta:?}");
    }
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    assert_eq!(store.prune_done_jobs(later).await.unwrap(), 1);
    assert!(store.get_job(&done.id).await.unwrap().is_none());
    // Its dedup key is free again: the same key makes a new job.
    let payload =
        json!({"user_id": 5, "title": "New", "message": "m", "notification_type": "info"});
    let mut again = submission("notify", payload);
    again.dedup_key = Some("old-5".into());
    let renewed = submit(store, &r.queue, again).await.unwrap();
    assert!(!renewed.existing);
    assert_ne!(renewed.id, done.id);
    r.worker.shutdown(Duration::from_secs(5)).await;
}

on_every_queue!(
    jobs_recorded_but_never_queued_are_queued_by_the_worker,
    unqueued_body
);
/// A process that died between the ledger and the queue (or a push that
/// failed) leaves jobs recorded but in no queue: the worker's requeue pass
/// finds their marks and queues them; each runs once.
async fn unqueued_body(case: Case) {
    let env = queue_env(case).await;
    let store = &env.db.store;
    let payloads: Vec<Value> = (0..3)
        .map(|i| json!({"user_id": 40 + i, "title": "t", "message": "m", "notification_type": "x"}))
        .collect();
    let ids: Vec<String> = (0..3).map(|_| ulid::Ulid::generate().to_string()).collect();
    let rows: Vec<herald::store::NewJob> = ids
        .iter()
        .zip(&payloads)
        .map(|(id, payload)| herald::store::NewJob {
            id,
            kind: "notify",
            payload,
            dedup_key: None,
            max_attempts: 3,
            run_at: chrono::Utc::now(),
        })
        .collect();
    store.insert_jobs(&rows).await.unwrap();
    // Their submitter died before pushing, a while ago.
    backdate_unqueued(store).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let worker = Worker::start(&env.settings, store.clone(), layer, queue.clone())
        .await
        .unwrap();
    for (id, user) in ids.iter().zip(40..) {
        wait_for_state(store, id, JobState::Done).await;
        assert_eq!(store.get_job(id).await.unwrap().unwrap().attempts, 1);
        assert_eq!(store.unread_count(user).await.unwrap(), 1);
    }
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Moves every unqueued mark a minute into the past.
async fn backdate_unqueued(store: &Store) {
    const SQL: &str = "UPDATE herald_unqueued SET since = $1";
    let past = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    match store {
        Store::Sqlite(pool) => drop(
            sqlx::query(SQL)
                .bind(past.naive_utc())
                .execute(pool)
                .await
                .unwrap(),
        ),
        Store::Postgres(pool) => drop(sqlx::query(SQL).bind(past).execute(pool).await.unwrap()),
    }
}

/// The queue's Redis is down at submission: the job is recorded and
/// accepted all the same, and runs once the queue is back, as is a dead job
/// retried while it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_submitted_while_the_queue_is_down_runs_when_it_is_back() {
    let mut env = queue_env(Case::Redis).await;
    let mut redis = crate::servers::RedisServer::start();
    env.settings.queue.redis_url = redis.url();
    let store = env.db.store.clone();
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    redis.stop();
    let payload = json!({"user_id": 50, "title": "t", "message": "m", "notification_type": "x"});
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        submit(&store, &queue, submission("notify", payload)),
    )
    .await
    .expect("submission answers while the queue is down")
    .expect("accepted: the ledger holds it");
    assert_eq!((done.existing, done.state), (false, JobState::Queued));
    redis.start_again();
    backdate_unqueued(&store).await;
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let worker = Worker::start(&env.settings, store.clone(), layer, queue.clone())
        .await
        .unwrap();
    wait_for_state(&store, &done.id, JobState::Done).await;
    assert_eq!(store.unread_count(50).await.unwrap(), 1);
    worker.shutdown(Duration::from_secs(5)).await;
}
