//! Nothing lost: a worker killed with SIGKILL in the middle of 5,000 jobs
//! and restarted leaves every job's notifications exactly once (on every
//! queue backend); Redis stopped under a running worker loses nothing and
//! publishing resumes; PostgreSQL restarted under it, the jobs complete;
//! two worker processes run each scan period once between them.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald::config::{LayerBackend, QueueBackend, Settings};
use herald::queue::{JobQueue, submit};
use herald::store::{JobState, NewTask, PoolOptions, Store};
use herald::worker::Worker;
use serde_json::json;

use crate::queue::{Case, QueueEnv, queue_env, submission, wait_for_state};
use crate::servers::{PostgresServer, RedisServer};

/// `herald worker` configured as `settings` says, through the environment;
/// its log goes to `<data_dir>/worker-<n>.log`.
/// A `herald worker` child process, killed when dropped (a failing test
/// leaves none running).
pub(crate) struct WorkerProcess(Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl From<Child> for WorkerProcess {
    fn from(child: Child) -> Self {
        WorkerProcess(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn worker_process(
    settings: &Settings,
    extra: &[(&str, &str)],
) -> (WorkerProcess, std::path::PathBuf) {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let log_path = settings.data_dir.join(format!("worker-{n}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let queue = &settings.queue;
    let backend = match queue.backend {
        QueueBackend::Database => "database",
        QueueBackend::Redis => "redis",
    };
    let millis = |d: Duration| format!("{}ms", d.as_millis());
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("worker")
        .env("DATABASE_URL", &settings.database.url)
        .env("SECRET_KEY", "resilience-test-secret")
        .env("HERALD_DATA_DIR", &settings.data_dir)
        .env("HERALD_QUEUE__BACKEND", backend)
        .env("HERALD_QUEUE__PREFIX", &queue.prefix)
        .env("HERALD_QUEUE__POLL_INTERVAL", millis(queue.poll_interval))
        .env(
            "HERALD_QUEUE__HEARTBEAT_INTERVAL",
            millis(queue.heartbeat_interval),
        )
        .env("HERALD_LAYER__BACKEND", "redis")
        .env("HERALD_LAYER__PREFIX", format!("{}.layer", queue.prefix))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    for (key, value) in extra {
        command.env(key, value);
    }
    let child = command.spawn().expect("herald worker starts");
    (WorkerProcess(child), log_path)
}

/// 50 tasks, each with an assignee and a creator.
async fn tasks(store: &Store) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..50 {
        let task = store
            .create_task(&NewTask {
                title: format!("Task {i}"),
                status: "open".into(),
                deadline: None,
                assignee_id: Some(1000 + i),
                created_by_id: Some(2000 + i),
            })
            .await
            .unwrap();
        ids.push(task.id);
    }
    ids
}

/// Submits `count` file_attached jobs (file ids 0..count) over `tasks`.
async fn submit_files(env: &QueueEnv, queue: &JobQueue, tasks: &[i64], count: usize) {
    let store = &env.db.store;
    let submits = (0..count).map(|i| {
        let payload = json!({"task_id": tasks[i % tasks.len()], "file_id": i,
            "file_name": format!("f{i}.pdf"), "uploaded_by": 9});
        submit(store, queue, submission("file_attached", payload))
    });
    let results: Vec<_> = futures_util::stream::iter(submits)
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "every submission queued");
}

pub(crate) async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn notification_count(store: &Store) -> i64 {
    herald_count(store, "SELECT count(*) FROM notifications_notification").await
}

async fn herald_count(store: &Store, sql: &'static str) -> i64 {
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

const JOBS: usize = 5000;

macro_rules! on_every_queue_process {
    ($name:ident, $body:ident) => {
        mod $name {
            use crate::queue::Case;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(Case::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(Case::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$body(Case::Redis).await
            }
        }
    };
}

on_every_queue_process!(kill_9_mid_run_then_restart_notifies_exactly_once, kill_body);
on_every_queue_process!(
    sigterm_mid_run_exits_0_and_a_restart_finishes_every_job_once,
    term_body
);
async fn term_body(case: Case) {
    interrupt_body(case, Interrupt::Term).await
}

/// How the first worker is stopped in the middle of the jobs.
#[derive(Clone, Copy, PartialEq)]
enum Interrupt {
    /// SIGKILL: nothing is cleaned up.
    Kill,
    /// SIGTERM: the worker stops fetching, lets its running jobs end and
    /// exits 0 within queue.shutdown_timeout.
    Term,
}

async fn kill_body(case: Case) {
    interrupt_body(case, Interrupt::Kill).await
}

async fn interrupt_body(case: Case, interrupt: Interrupt) {
    let env = queue_env(case).await;
    let store = &env.db.store;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let tasks = tasks(store).await;
    submit_files(&env, &queue, &tasks, JOBS).await;
    let (mut first, _) = worker_process(&env.settings, &[]);
    wait_until("some jobs done", Duration::from_secs(120), async || {
        store.count_jobs(JobState::Done).await.unwrap() >= 300
    })
    .await;
    if interrupt == Interrupt::Kill {
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
    } else {
        let pid = first.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let mut status = None;
        for _ in 0..600 {
            status = first.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = status.expect("herald worker exits within 30 s of SIGTERM");
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    }
    let done_at_kill = store.count_jobs(JobState::Done).await.unwrap();
    assert!(
        done_at_kill < JOBS as i64,
        "killed in the middle ({done_at_kill} done)"
    );
    let (mut second, _) = worker_process(&env.settings, &[]);
    wait_until("every job done", Duration::from_secs(240), async || {
        store.count_jobs(JobState::Done).await.unwrap() == JOBS as i64
    })
    .await;
    wait_until(
        "every notification published",
        Duration::from_secs(60),
        async || store.outbox_len().await.unwrap() == 0,
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    // Two per job (assignee and creator), each exactly once.
    assert_eq!(notification_count(store).await, 2 * JOBS as i64);
    let distinct = herald_count(
        store,
        "SELECT count(*) FROM (SELECT DISTINCT user_id, dedup_key FROM notifications_notification) d",
    )
    .await;
    assert_eq!(distinct, 2 * JOBS as i64);
    assert_eq!(store.count_jobs(JobState::Dead).await.unwrap(), 0);
    let how = match interrupt {
        Interrupt::Kill => "worker killed -9",
        Interrupt::Term => "worker SIGTERM",
    };
    eprintln!(
        "fault: {how} mid-run, restarted | jobs {JOBS} | rows {} (one per job and user) | \
         {done_at_kill} done at the interrupt | 0 lost, 0 duplicated | dead 0",
        2 * JOBS
    );
}

/// Submits `count` notify jobs for user 7; their ids.
async fn submit_notifies(store: &Store, queue: &JobQueue, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let payload = json!({"user_id": 7, "title": format!("n{i}"), "message": "m",
            "notification_type": "info"});
        let done = submit(store, queue, submission("notify", payload))
            .await
            .unwrap();
        ids.push(done.id);
    }
    ids
}

/// A worker in this process on `env`, publishing through `layer`.
async fn worker_on(
    env: &QueueEnv,
    queue: &JobQueue,
    layer: Arc<dyn herald::layer::ChannelLayer>,
) -> Worker {
    Worker::start(&env.settings, env.db.store.clone(), layer, queue.clone())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_while_jobs_run_loses_nothing() {
    // Redis with an append-only file: group memberships survive the stop.
    let mut redis = RedisServer::start_persistent();
    let mut env = queue_env(Case::Postgres).await;
    env.settings.layer.backend = LayerBackend::Redis;
    env.settings.layer.hosts = vec![redis.url()];
    env.settings.worker.outbox_retry_every = Duration::from_millis(100);
    let layer = herald::layer::build(&env.settings.layer).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer
        .group_add(&herald::publish::notification_group(7), &channel)
        .await
        .unwrap();
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let worker = worker_on(&env, &queue, layer.clone()).await;
    let store = &env.db.store;
    redis.stop();
    let ids = submit_notifies(store, &queue, 20).await;
    for id in &ids {
        wait_for_state(store, id, JobState::Done).await;
    }
    // Committed, not published: all 20 wait in the outbox.
    assert_eq!(notification_count(store).await, 20);
    assert_eq!(store.outbox_len().await.unwrap(), 20);
    redis.start_again();
    wait_until("the outbox drained", Duration::from_secs(60), async || {
        store.outbox_len().await.unwrap() == 0
    })
    .await;
    let mut titles = std::collections::BTreeSet::new();
    while titles.len() < 20 {
        let message = tokio::time::timeout(Duration::from_secs(20), layer.receive(&channel))
            .await
            .expect("every notification arrives after Redis is back")
            .unwrap();
        if message["type"] == herald::layer::RESYNC {
            continue; // the layer reconnected: its channels are told first
        }
        titles.insert(message["data"]["title"].as_str().unwrap().to_string());
    }
    assert_eq!(notification_count(store).await, 20, "no duplicate rows");
    eprintln!(
        "fault: Redis stopped under a worker | jobs 20 | rows 20 | 20 published after it \
         returned, 0 lost | outbox 0"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_while_jobs_run_the_jobs_complete() {
    let mut postgres = PostgresServer::start();
    let mut env = queue_env(Case::Postgres).await;
    env.settings.database.url = postgres.url();
    let options = PoolOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = Store::connect(&postgres.url(), options).await.unwrap();
    store.migrate().await.unwrap();
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let layer = herald::layer::build(&env.settings.layer).unwrap();
    let worker = Worker::start(&env.settings, store.clone(), layer, queue.clone())
        .await
        .unwrap();
    let ids = submit_notifies(&store, &queue, 300).await;
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.start_again();
    for id in &ids {
        wait_for_state_long(&store, id).await;
    }
    assert_eq!(notification_count(&store).await, 300);
    eprintln!(
        "fault: PostgreSQL restarted under a worker | jobs 300 | rows 300 | all done, 0 lost"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Waits (up to two minutes, through database errors) for job `id` to be done.
async fn wait_for_state_long(store: &Store, id: &str) {
    wait_until(
        "job done after the restart",
        Duration::from_secs(120),
        async || matches!(store.get_job(id).await, Ok(Some(job)) if job.state == JobState::Done),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_run_each_scan_period_once() {
    let env = queue_env(Case::Postgres).await;
    let store = &env.db.store;
    let past = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    for i in 0..30 {
        store
            .create_task(&NewTask {
                title: format!("Late {i}"),
                status: "open".into(),
                deadline: Some(past),
                assignee_id: Some(500 + i),
                created_by_id: None,
            })
            .await
            .unwrap();
    }
    let every_second = [
        ("HERALD_WORKER__OVERDUE_SCHEDULE", "* * * * * *"),
        ("RUST_LOG", "herald::worker=info,herald::startup=info"),
        ("HERALD_LOG_FORMAT", "json"),
    ];
    let mut with_metrics = every_second.to_vec();
    // Port 0: the worker logs the address it bound.
    with_metrics.push(("HERALD_WORKER__LISTEN", "127.0.0.1:0"));
    let workers = [
        worker_process(&env.settings, &with_metrics),
        worker_process(&env.settings, &every_second),
    ];
    wait_until("30 overdue notices", Duration::from_secs(60), async || {
        notification_count(store).await >= 30
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The first worker serves its metrics (worker.listen).
    let metrics = metrics_text(logged_address(&workers[0].1)).await;
    assert!(
        metrics.contains("herald_queue_depth{state=\"queued\"}"),
        "{metrics}"
    );
    let mut periods = Vec::new();
    for (mut worker, log) in workers {
        worker.kill().unwrap();
        worker.wait().unwrap();
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["fields"]["message"] == "scheduled scan ran"
                && event["fields"]["scan"] == "overdue_check"
            {
                periods.push(event["fields"]["period"].as_str().unwrap().to_string());
            }
        }
    }
    let ran = periods.len();
    periods.sort();
    periods.dedup();
    assert!(ran >= 4, "the scan ran every second ({ran} periods)");
    assert_eq!(periods.len(), ran, "no period ran in both processes");
    assert_eq!(notification_count(store).await, 30, "each task once");
}

/// The text of GET /metrics at `addr`.
/// The address a worker logged as its metrics listener.
fn logged_address(log: &std::path::Path) -> std::net::SocketAddr {
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["fields"]["message"] == "worker metrics listening" {
            return event["fields"]["address"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        }
    }
    panic!(
        "the worker logged no metrics address:\n{}",
        std::fs::read_to_string(log).unwrap()
    );
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}
