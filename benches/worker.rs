//! Worker benchmark: herald's job worker end to end against the
//! application's Celery worker doing the same job, in one run, on the same
//! PostgreSQL and Redis; then the overdue scan over a million tasks.
//!
//!     scripts/bench-worker     (= cargo bench --bench worker, with the venv)
//!
//! * End to end: N `file_attached` jobs (each: read the task, write a
//!   notification for its assignee and its creator, publish both with
//!   `group_send` on a Redis channel layer) are submitted first; then the
//!   worker starts, and the clock runs until every job is done and every
//!   notification committed and published (`run`). Herald runs twice per
//!   queue backend (PostgreSQL, Redis): so, and with the worker started
//!   first and the clock running from the first submission to the last
//!   publish (`submitted while running`). Jobs are submitted 1,000 at a
//!   time, as `POST /api/jobs/batch` does. The peer, `benches/worker_peer.py`, is a
//!   Celery 5 worker (Redis broker, prefork, 2 processes: one per core)
//!   running the same job with psycopg and channels_redis, as the
//!   application's Celery tasks do.
//! * Users online: for herald and the peer alike, another layer instance (a
//!   sidecar's view) holds one channel per notified user, joined to its
//!   `notifications_{id}` group and drained, so every notification writes
//!   and delivers its copy; the senders' capacity for that queue key is
//!   20,000 (the docs' advice).
//! * Scan: 1,000,000 tasks of which 100,000 are overdue; one overdue check
//!   (one insert-select, then publishing every new notification).
//!
//! Environment: HERALD_BENCH_POSTGRES (postgres://postgres@127.0.0.1:5432/test),
//! HERALD_BENCH_REDIS (redis://127.0.0.1:6379), HERALD_BENCH_JOBS (100000),
//! HERALD_BENCH_PEER_JOBS (5000), HERALD_BENCH_TASKS (1000000),
//! HERALD_BENCH_PYTHON (a python with celery; "skip" runs herald alone),
//! HERALD_BENCH_QUEUES (postgres,redis), HERALD_BENCH_ONLY (`scan`: the
//! overdue scan alone), HERALD_BENCH_CONCURRENCY (the
//! file_attached concurrency; default: the configured one),
//! HERALD_BENCH_BATCH_SIZE and HERALD_BENCH_BATCHES (`queue.batch_size`,
//! `queue.batches`; default: the configured ones).
//! Each run uses databases and key prefixes of its own and drops them
//! (databases, and the Redis keys under its prefix).
//!
//! The dashboard's cost: HERALD_BENCH_DASHBOARD=N (with HERALD_BENCH_REPEAT,
//! default 3) measures only the *run* clock, alternately without and with
//! the operations dashboard open: its server in the worker's process and N
//! clients reading its event stream (each read of the fleet then serves
//! them all, once a second), and prints both rates per round, and how long
//! the dashboard's reads took. Every run writes the worker's heartbeat, as
//! every herald process does. HERALD_BENCH_NO_HISTORY_INDEXES drops the two
//! ledger indexes the dashboard's history search added (for an A/B of what
//! they cost the ledger's writes).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use herald::config::{LayerBackend, QueueBackend, Settings};
use herald::jobs::{Job, JobContext, OverdueCheck};
use herald::publish::outbox::Publisher;
use herald::queue::{JobQueue, MAX_BATCH, Submission, submit_many};
use herald::store::{JobState, Store};
use herald::worker::Worker;
use serde_json::json;
use sqlx::Connection;

/// mimalloc instead of glibc's malloc: a batch allocates and frees many
/// small values (JSON, SQL rows, messages) across threads, where glibc spent
/// a tenth of this bench's CPU; the same allocator as the `herald` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common.rs"]
mod common;

use common::{all_published, drop_database, drop_redis_keys, env_number, env_or, fresh_database};

async fn execute(store: &Store, sql: &'static str) {
    if let Store::Postgres(pool) = store {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
    }
}

/// 1,000 open tasks, each with an assignee and a creator.
async fn seed_tasks(store: &Store) {
    execute(
        store,
        "INSERT INTO tasks_task (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
         SELECT 'Task ' || i, 'open', NULL, 1000 + i, 5000 + i, now(), now() FROM generate_series(1, 1000) i",
    )
    .await;
}

/// The users the seeded tasks notify: assignees 1001..=2000, creators
/// 5001..=6000 (file_attached's uploader, user 1, is neither).
fn users() -> Vec<i64> {
    (1001..=2000).chain(5001..=6000).collect()
}

/// Copies a sender may queue per process before it drops (channels_redis's
/// `capacity` for the audience's queue key), on both sides of the bench: the
/// docs' advice for herald's keys (docs/operations.md).
const AUDIENCE_CAPACITY: usize = 20_000;

/// Users online: one channel per user, each joined to its
/// `notifications_{id}` group and drained, in another layer instance (as a
/// sidecar process holds them), so every notification writes its copy.
struct Audience {
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    resyncs: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
}

impl Audience {
    async fn join(redis: &str, prefix: &str) -> Audience {
        let mut layer = Settings::defaults().layer;
        layer.backend = LayerBackend::Redis;
        layer.hosts = vec![redis.into()];
        layer.prefix = prefix.into();
        layer.capacity = AUDIENCE_CAPACITY;
        let layer = herald::layer::build(&layer).unwrap();
        let audience = Audience {
            received: Default::default(),
            resyncs: Default::default(),
            stop: tokio_util::sync::CancellationToken::new(),
        };
        for user in users() {
            let channel = layer.new_channel("specific").await.unwrap();
            let group = herald::publish::notification_group(user);
            layer.group_add(&group, &channel).await.unwrap();
            let (layer, stop) = (layer.clone(), audience.stop.clone());
            let (received, resyncs) = (audience.received.clone(), audience.resyncs.clone());
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        message = layer.receive(&channel) => message,
                        () = stop.cancelled() => return,
                    };
                    let Ok(message) = message else { return };
                    let counter = if message["type"] == herald::layer::RESYNC {
                        &resyncs
                    } else {
                        &received
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        audience
    }

    /// Copies received and resyncs (copies the layer dropped) so far.
    fn counts(&self) -> (u64, u64) {
        let get = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        (get(&self.received), get(&self.resyncs))
    }
}

impl Drop for Audience {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn settings(url: &str, redis: &str, backend: QueueBackend) -> Settings {
    let mut settings = Settings::defaults();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    settings.database.url = url.into();
    settings.data_dir = std::env::temp_dir().join(format!("herald-bench-{tag}"));
    settings.secret_key = Some("bench-secret".to_string().into());
    settings.layer.backend = LayerBackend::Redis;
    settings.layer.hosts = vec![redis.into()];
    settings.layer.prefix = format!("bench-{tag}");
    settings.layer.capacity = AUDIENCE_CAPACITY;
    settings.queue.backend = backend;
    settings.queue.redis_url = redis.into();
    settings.queue.prefix = format!("bench-{tag}");
    settings.queue.poll_interval = Duration::from_millis(10);
    if let Ok(n) = std::env::var("HERALD_BENCH_CONCURRENCY") {
        let n = n.parse().expect("HERALD_BENCH_CONCURRENCY is a number");
        settings.queue.concurrency.insert("file_attached".into(), n);
    }
    if let Ok(n) = std::env::var("HERALD_BENCH_BATCH_SIZE") {
        settings.queue.batch_size = n.parse().expect("HERALD_BENCH_BATCH_SIZE is a number");
    }
    if let Ok(n) = std::env::var("HERALD_BENCH_BATCHES") {
        settings.queue.batches = n.parse().expect("HERALD_BENCH_BATCHES is a number");
    }
    settings
}

/// Submits `jobs` file_attached jobs in batches of [`MAX_BATCH`] (as
/// `POST /api/jobs/batch` does), two batches at a time; returns jobs/s.
async fn enqueue(store: &Store, queue: &JobQueue, jobs: usize) -> f64 {
    let started = Instant::now();
    let job = |i: usize| Submission {
        kind: "file_attached".into(),
        payload: json!({"task_id": 1 + i % 1000, "file_id": i,
            "file_name": format!("f{i}.pdf"), "uploaded_by": 1}),
        run_at: None,
        dedup_key: None,
    };
    let batches = (0..jobs)
        .step_by(MAX_BATCH)
        .map(|first| {
            (first..jobs.min(first + MAX_BATCH))
                .map(job)
                .collect::<Vec<_>>()
        })
        .map(|batch| submit_many(store, queue, batch));
    let results: Vec<_> = futures_util::stream::iter(batches)
        .buffer_unordered(2)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "every job queued");
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// How the clock runs for one measurement.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    /// Every job is queued first; the clock starts with the worker.
    QueuedFirst,
    /// The worker runs first; the clock starts with the first submission.
    WhileRunning,
}

/// One run on a fresh database: jobs/s by `clock` until every job is done
/// and every notification published, and the enqueue rate.
async fn herald_run(
    admin: &str,
    redis: &str,
    backend: QueueBackend,
    jobs: usize,
    clock: Clock,
) -> (f64, f64) {
    let run = herald_run_watched(admin, redis, backend, jobs, clock, None).await;
    (run.rate, run.enqueue_rate)
}

/// CPU seconds a process has used (utime + stime of /proc/PID/stat), or
/// 0 when it is gone or unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// The PostgreSQL backends of database `name`, split into the dashboard's
/// (application_name `herald-dashboard`) and the others.
async fn backends(admin: &str, name: &str) -> (Vec<u32>, Vec<u32>) {
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    let rows: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let (dashboard, others): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|(_, app)| app.as_deref() == Some("herald-dashboard"));
    let pids =
        |rows: Vec<(i32, Option<String>)>| rows.into_iter().map(|(pid, _)| pid as u32).collect();
    (pids(dashboard), pids(others))
}

/// CPU seconds of `pids` now, by pid.
fn cpu_of(pids: &[u32]) -> std::collections::HashMap<u32, f64> {
    pids.iter().map(|&pid| (pid, cpu_seconds(pid))).collect()
}

/// CPU used between `before` and `after` (a pid new at `after` counts whole).
fn cpu_between(
    before: &std::collections::HashMap<u32, f64>,
    after: &std::collections::HashMap<u32, f64>,
) -> f64 {
    after
        .iter()
        .map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0))
        .filter(|used| *used > 0.0)
        .sum()
}

/// The dashboard during a run: served by a `herald sidecar` process on the
/// run's database and Redis (as an operator's sidecar would), read by
/// `clients` event-stream readers that also read the history every 5 s,
/// as an open page does. With no clients the sidecar still runs (its
/// heartbeat), so both sides of the comparison have it.
struct Watching {
    sidecar: tokio::process::Child,
    readers: Vec<tokio::task::JoinHandle<usize>>,
    history: Vec<tokio::task::JoinHandle<()>>,
}

impl Watching {
    async fn open(settings: &Settings, url: &str, redis: &str, clients: usize) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let queue = match settings.queue.backend {
            QueueBackend::Redis => "redis",
            QueueBackend::Database => "database",
        };
        let key = "bench-key";
        let sidecar = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("sidecar")
            .env("DATABASE_URL", url)
            .env("SECRET_KEY", "bench-secret")
            .env("REDIS_URL", redis)
            .env("HERALD_DATA_DIR", &settings.data_dir)
            .env("HERALD_LAYER__BACKEND", "redis")
            .env("HERALD_LAYER__PREFIX", &settings.layer.prefix)
            .env("HERALD_QUEUE__BACKEND", queue)
            .env("HERALD_QUEUE__REDIS_URL", redis)
            .env("HERALD_QUEUE__PREFIX", &settings.queue.prefix)
            .env("HERALD_API__KEY", key)
            .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .expect("the herald binary runs");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let readers = (0..clients)
            .map(|_| {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                        return 0;
                    };
                    let request = format!(
                        "GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                         Authorization: Bearer {key}\r\n\r\n"
                    );
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let mut events = 0;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(read) = stream.read(&mut buf).await {
                        if read == 0 {
                            break;
                        }
                        events += buf[..read]
                            .windows(12)
                            .filter(|w| w == b"event: stats")
                            .count();
                    }
                    events
                })
            })
            .collect();
        let history = (0..clients)
            .map(|_| {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                            return;
                        };
                        let request = format!(
                            "GET /dashboard/history HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                             Connection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
                        );
                        let _ = stream.write_all(request.as_bytes()).await;
                        let mut answer = Vec::new();
                        let _ = stream.read_to_end(&mut answer).await;
                    }
                })
            })
            .collect();
        Watching {
            sidecar,
            readers,
            history,
        }
    }

    fn pid(&self) -> u32 {
        self.sidecar.id().unwrap_or(0)
    }

    /// Stops the sidecar; the events each client read.
    async fn close(mut self) -> Vec<usize> {
        for task in &self.history {
            task.abort();
        }
        let _ = self.sidecar.kill().await;
        let mut counts = Vec::new();
        for reader in self.readers {
            counts.push(reader.await.unwrap_or(0));
        }
        counts
    }
}

/// What one run measured: jobs/s, the enqueue rate, and CPU seconds used
/// during the run by the worker (the bench process and its database
/// sessions), by the dashboard (the sidecar process and its
/// `herald-dashboard` database sessions), and the events each client got.
struct Measured {
    rate: f64,
    enqueue_rate: f64,
    seconds: f64,
    worker_cpu: f64,
    dashboard_cpu: f64,
    events: Vec<usize>,
}

/// [`herald_run`], with a dashboard-serving sidecar and `clients` readers
/// when `watched` (on the *run* clock only).
async fn herald_run_watched(
    admin: &str,
    redis: &str,
    backend: QueueBackend,
    jobs: usize,
    clock: Clock,
    watched: Option<usize>,
) -> Measured {
    let (url, store) = fresh_database(admin, "e2e").await;
    let database = url.rsplit_once('/').unwrap().1.to_string();
    seed_tasks(&store).await;
    // What the dashboard's two history indexes cost every ledger write:
    // `user`, `kind` or anything else (both) drops them.
    match std::env::var("HERALD_BENCH_NO_HISTORY_INDEXES").as_deref() {
        Ok("user") => execute(&store, "DROP INDEX herald_jobs_user").await,
        Ok("kind") => execute(&store, "DROP INDEX herald_jobs_kind").await,
        Ok(_) => {
            execute(
                &store,
                "DROP INDEX herald_jobs_kind; DROP INDEX herald_jobs_user",
            )
            .await
        }
        Err(_) => {}
    }
    let settings = settings(&url, redis, backend);
    let audience = Audience::join(redis, &settings.layer.prefix).await;
    let queue = JobQueue::connect(&settings).await.unwrap();
    let start_worker = || {
        let layer = herald::layer::build(&settings.layer).unwrap();
        Worker::start(&settings, store.clone(), layer, queue.clone())
    };
    let heartbeat = herald::fleet::Heartbeat::start(
        store.clone(),
        herald::fleet::Role::Worker,
        &settings.dashboard,
        None,
    );
    let mut watching = None;
    let mut cpu_before = None;
    let (started, worker, enqueue_rate) = if clock == Clock::QueuedFirst {
        let enqueue_rate = enqueue(&store, &queue, jobs).await;
        if let Some(clients) = watched {
            watching = Some(Watching::open(&settings, &url, redis, clients).await);
            // Its first reads (connections, the full sample read) settle.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let worker = start_worker().await.unwrap();
        let (dashboard, others) = backends(admin, &database).await;
        let sidecar = watching.as_ref().map_or(0, Watching::pid);
        cpu_before = Some((
            cpu_seconds(std::process::id()),
            cpu_seconds(sidecar),
            cpu_of(&dashboard),
            cpu_of(&others),
        ));
        (Instant::now(), worker, enqueue_rate)
    } else {
        let worker = start_worker().await.unwrap();
        let started = Instant::now();
        (started, worker, enqueue(&store, &queue, jobs).await)
    };
    while !all_published(&store).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "herald stalled"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = jobs as f64 / seconds;
    let (mut worker_cpu, mut dashboard_cpu) = (0.0, 0.0);
    if let Some((own, sidecar, dashboard, others)) = cpu_before {
        let (dashboard_now, others_now) = backends(admin, &database).await;
        let pid = watching.as_ref().map_or(0, Watching::pid);
        worker_cpu =
            cpu_seconds(std::process::id()) - own + cpu_between(&others, &cpu_of(&others_now));
        dashboard_cpu = if pid == 0 {
            0.0
        } else {
            cpu_seconds(pid) - sidecar
        } + cpu_between(&dashboard, &cpu_of(&dashboard_now));
    }
    let events = match watching {
        Some(watching) => watching.close().await,
        None => Vec::new(),
    };
    let done = store.count_jobs(JobState::Done).await.unwrap();
    assert_eq!(done, jobs as i64, "every job done");
    let (copies, resyncs) = audience.counts();
    eprintln!(
        "herald: {copies} copies reached the online users ({} sent), {resyncs} resyncs",
        2 * jobs
    );
    heartbeat.stop().await;
    worker.shutdown(Duration::from_secs(10)).await;
    queue.close().await;
    store.close().await;
    drop_database(admin, &url).await;
    drop_redis_keys(redis, &settings.queue.prefix).await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    Measured {
        rate,
        enqueue_rate,
        seconds,
        worker_cpu,
        dashboard_cpu,
        events,
    }
}

/// HERALD_BENCH_DASHBOARD=N: each round runs the jobs twice (which first
/// alternates), each time beside a `herald sidecar`: once with no client,
/// once with the dashboard open to N clients. Prints the rates and the CPU
/// the dashboard used against the worker's.
async fn dashboard_cost(admin: &str, redis: &str, jobs: usize, clients: usize) {
    let repeat = env_number("HERALD_BENCH_REPEAT", 3);
    let backends = match env_or("HERALD_BENCH_QUEUES", "redis").as_str() {
        "postgres" => vec![("postgres", QueueBackend::Database)],
        "redis" => vec![("redis", QueueBackend::Redis)],
        _ => vec![
            ("postgres", QueueBackend::Database),
            ("redis", QueueBackend::Redis),
        ],
    };
    println!(
        "\nDashboard cost: {jobs} file_attached jobs, run clock, a herald sidecar serving the \
         dashboard, with 0 or {clients} clients"
    );
    println!(
        "| queue | round | jobs/s, 0 clients | jobs/s, {clients} clients | ratio | worker CPU s (0 / {clients}) | sidecar CPU s (0 / {clients}) | dashboard share of CPU | events per client |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, backend) in backends {
        let (mut without, mut with, mut shares) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..repeat {
            let order = if round % 2 == 0 {
                [0, clients]
            } else {
                [clients, 0]
            };
            let mut runs: [Option<Measured>; 2] = [None, None];
            for open in order {
                let measured =
                    herald_run_watched(admin, redis, backend, jobs, Clock::QueuedFirst, Some(open))
                        .await;
                runs[usize::from(open > 0)] = Some(measured);
            }
            let [Some(idle), Some(open)] = runs else {
                unreachable!("both runs measured")
            };
            // The dashboard's own: what the sidecar and its sessions used
            // beyond an idle sidecar's, over the same seconds.
            let idle_rate = idle.dashboard_cpu / idle.seconds;
            let extra = (open.dashboard_cpu - idle_rate * open.seconds).max(0.0);
            let share = extra / (open.worker_cpu + open.dashboard_cpu);
            without.push(idle.rate);
            with.push(open.rate);
            shares.push(share);
            let events = format!(
                "{}-{}",
                open.events.iter().min().unwrap_or(&0),
                open.events.iter().max().unwrap_or(&0)
            );
            println!(
                "| {name} | {} | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} | {:.2} / {:.2} | {:.2}% | {events} |",
                round + 1,
                idle.rate,
                open.rate,
                open.rate / idle.rate,
                idle.worker_cpu,
                open.worker_cpu,
                idle.dashboard_cpu,
                open.dashboard_cpu,
                share * 100.0,
            );
            let _ = (idle.enqueue_rate, open.enqueue_rate);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (a, b) = (mean(&without), mean(&with));
        println!(
            "| {name} | mean | {a:.0} | {b:.0} | {:.3} | | | {:.2}% | |",
            b / a,
            mean(&shares) * 100.0
        );
    }
}

/// The overdue scan over `tasks` tasks, a tenth overdue: seconds, created.
async fn herald_scan(admin: &str, redis: &str, tasks: usize) -> (f64, usize) {
    let (url, store) = fresh_database(admin, "scan").await;
    if let Store::Postgres(pool) = &store {
        // Every tenth task is open and past its deadline (the overdue
        // ones); as many more are past it but closed, which the scan skips.
        sqlx::query(
            "INSERT INTO tasks_task (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
             SELECT 'Task ' || i, CASE WHEN i % 10 = 5 THEN 'done' ELSE 'open' END, \
                    CASE WHEN i % 10 IN (0, 5) THEN now() - interval '1 hour' \
                         ELSE now() + interval '3 days' END, \
                    1 + i % 50000, NULL, now(), now() FROM generate_series(1, $1) i",
        )
        .bind(tasks as i64)
        .execute(pool)
        .await
        .unwrap();
        sqlx::raw_sql("VACUUM ANALYZE tasks_task")
            .execute(pool)
            .await
            .unwrap();
    }
    let settings = settings(&url, redis, QueueBackend::Database);
    let layer = herald::layer::build(&settings.layer).unwrap();
    let ctx = JobContext {
        store: store.clone(),
        publisher: Publisher::new(store.clone(), layer),
        reminder_offsets: settings.worker.reminder_offsets.clone(),
        closed_statuses: settings.worker.closed_statuses.clone(),
        notification_types: settings.worker.notification_types.clone(),
        job_id: "bench-scan".into(),
    };
    let started = Instant::now();
    let outcome = Job::OverdueCheck(OverdueCheck {}).run(&ctx).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(outcome.published.failed, 0, "every notice published");
    // Where the time goes: the insert-select alone, on the same tasks again
    // (their notices exist: it finds nothing new), and a second pass.
    let again = Instant::now();
    let none = Job::OverdueCheck(OverdueCheck {}).run(&ctx).await.unwrap();
    eprintln!(
        "scan: {:.2} s for the first pass; a second pass (incremental, {} new) {:.3} s",
        seconds,
        none.created,
        again.elapsed().as_secs_f64()
    );
    store.close().await;
    drop_database(admin, &url).await;
    (seconds, outcome.created)
}

/// Runs the Celery peer; its jobs/s, or None when skipped or failed.
async fn celery_end_to_end(admin: &str, redis: &str, jobs: usize) -> Option<f64> {
    let python = env_or("HERALD_BENCH_PYTHON", "skip");
    if python == "skip" {
        return None;
    }
    let (url, store) = fresh_database(admin, "celery").await;
    seed_tasks(&store).await;
    store.close().await;
    let prefix = format!("peer-{}", uuid::Uuid::new_v4().simple());
    let audience = Audience::join(redis, &prefix).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/worker_peer.py");
    let output = tokio::process::Command::new(&python)
        .env("PEER_LAYER_PREFIX", &prefix)
        .env("PEER_LAYER_CAPACITY", AUDIENCE_CAPACITY.to_string())
        .arg(script)
        .args([
            "--database",
            &url,
            "--redis",
            redis,
            "--jobs",
            &jobs.to_string(),
        ])
        .output()
        .await;
    drop_database(admin, &url).await;
    let output = output.ok()?;
    let line = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(report) => report,
        Err(_) => {
            eprintln!(
                "celery peer failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
    };
    let (copies, _) = audience.counts();
    eprintln!(
        "celery: {copies} copies reached the online users ({} sent)",
        2 * jobs
    );
    drop_redis_keys(redis, &prefix).await;
    report["jobs_per_second"].as_f64()
}

fn main() {
    herald::telemetry::init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = env_or("HERALD_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test");
        let redis = env_or("HERALD_BENCH_REDIS", "redis://127.0.0.1:6379");
        let jobs = env_number("HERALD_BENCH_JOBS", 100_000);
        let peer_jobs = env_number("HERALD_BENCH_PEER_JOBS", 5_000);
        let tasks = env_number("HERALD_BENCH_TASKS", 1_000_000);
        let clients = env_number("HERALD_BENCH_DASHBOARD", 0);
        if clients > 0 {
            dashboard_cost(&admin, &redis, jobs, clients).await;
            return;
        }
        let only_scan = env_or("HERALD_BENCH_ONLY", "") == "scan";
        let celery = if only_scan {
            None
        } else {
            celery_end_to_end(&admin, &redis, peer_jobs).await
        };
        let mut rows = Vec::new();
        let backends = match env_or("HERALD_BENCH_QUEUES", "postgres,redis").as_str() {
            _ if only_scan => vec![],
            "postgres" => vec![("postgres", QueueBackend::Database)],
            "redis" => vec![("redis", QueueBackend::Redis)],
            _ => vec![("postgres", QueueBackend::Database), ("redis", QueueBackend::Redis)],
        };
        for (name, backend) in backends {
            let (run, enqueue_rate) =
                herald_run(&admin, &redis, backend, jobs, Clock::QueuedFirst).await;
            let (whole, _) = herald_run(&admin, &redis, backend, jobs, Clock::WhileRunning).await;
            rows.push((name, run, enqueue_rate, whole));
        }
        let (scan_seconds, created) = herald_scan(&admin, &redis, tasks).await;
        println!("\nEnd to end: file_attached jobs, committed and published (PostgreSQL + Redis layer)");
        println!("| worker | queue | jobs | jobs/s (run) | vs Celery | jobs/s (enqueue) | jobs/s (submitted while running) |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        if let Some(peer) = celery {
            println!("| Celery 5.7 (prefork, 2) | Redis | {peer_jobs} | {peer:.0} | 1.0x | - | - |");
        }
        for (name, run, enqueue_rate, whole) in &rows {
            let ratio = celery.map_or("-".to_string(), |peer| format!("{:.1}x", run / peer));
            println!("| herald | {name} | {jobs} | {run:.0} | {ratio} | {enqueue_rate:.0} | {whole:.0} |");
        }
        println!("\nOverdue scan: {tasks} tasks, {created} notices created and published in {scan_seconds:.2} s");
    });
}
