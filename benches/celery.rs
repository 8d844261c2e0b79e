//! Celery drop-in benchmark: a broker queue pre-filled with real
//! `file_attached.delay(...)` messages made by the celery package (the
//! interop Django project's task, routed to herald's queue), drained end to
//! end by herald (ingress, ledger, Redis queue, worker: every notification
//! committed and published, every Celery result written), and a sample of
//! the same calls drained by a Celery prefork worker (concurrency 2) running
//! the application's own task, in the same run, on the same database.
//!
//!     scripts/bench-celery     (= cargo bench --bench celery, with the venv)
//!
//! The database is made by Django's `migrate` (the application's tables,
//! foreign keys included), then `herald migrate`; 7,000 users and 1,000
//! tasks (each with an assignee and a creator, so each job writes two
//! notifications). Celery's broker and results, herald's queue and both
//! channel layers share one Redis: a redis-server the bench starts on a
//! free port (or HERALD_BENCH_REDIS).
//!
//! Environment: HERALD_BENCH_PYTHON (the interop venv's python; required),
//! HERALD_BENCH_POSTGRES (postgres://postgres@127.0.0.1:5432/test),
//! HERALD_BENCH_REDIS, HERALD_BENCH_JOBS (100000), HERALD_BENCH_PEER_JOBS
//! (2000), HERALD_BENCH_APART (1: a second run, the ingress alone and then
//! the worker alone), HERALD_BENCH_CELERY_BATCH (celery.batch_size),
//! HERALD_BENCH_CELERY_LOOPS (celery.concurrency). The database is dropped
//! at the end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::config::{LayerBackend, QueueBackend, Settings};
use herald::ingress::Ingress;
use herald::queue::JobQueue;
use herald::store::{JobState, Store};
use herald::worker::Worker;

/// The same allocator as the `herald` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common.rs"]
mod common;

use common::{all_published, create_database, env_number, env_or, migrated_store};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A redis-server of the bench's own, stopped on drop.
struct PrivateRedis(Child);

impl PrivateRedis {
    fn start() -> (PrivateRedis, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (PrivateRedis(child), format!("redis://127.0.0.1:{port}"))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything one run shares: the database, Redis, and the Python side.
struct Bench {
    admin: String,
    url: String,
    redis: String,
    /// The private redis-server's pid, for its CPU time.
    redis_pid: Option<u32>,
    python: String,
    prefix: String,
}

impl Bench {
    /// `python ARGS` with the interop project's environment.
    fn python(&self, args: &[&str], queue: &str, results: bool) -> Command {
        let app = repo().join("tests/interop/django_app");
        let mut command = Command::new(&self.python);
        command
            .args(args)
            .current_dir(&app)
            .env("PYTHONPATH", &app)
            .env("DJANGO_SETTINGS_MODULE", "settings")
            .env("INTEROP_SECRET_KEY", "bench-secret")
            .env("INTEROP_DATABASE", &self.url)
            .env("INTEROP_ID_VARIANT", "bigauto")
            .env("INTEROP_REDIS_URL", &self.redis)
            .env("INTEROP_PREFIX", format!("{}-layer", self.prefix))
            .env("CELERY_BROKER_URL", format!("{}/0", self.redis))
            .env("INTEROP_CELERY_QUEUE", queue)
            .env_remove("CELERY_RESULT_BACKEND");
        if results {
            command.env("CELERY_RESULT_BACKEND", format!("{}/1", self.redis));
        }
        command
    }

    /// Runs a Python command to its end; its one JSON line.
    fn run(&self, mut command: Command, what: &str) -> serde_json::Value {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .expect("python runs");
        assert!(output.status.success(), "{what} failed");
        let out = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(out.trim().lines().last().unwrap_or_default())
            .unwrap_or_else(|_| panic!("{what} printed {out}"))
    }

    /// `jobs` real `file_attached.delay()` calls into `queue`; seconds.
    fn fill(&self, queue: &str, jobs: usize) -> f64 {
        let peer = repo().join("benches/celery_peer.py");
        let peer = peer.to_str().unwrap();
        let command = self.python(&[peer, "fill", "--jobs", &jobs.to_string()], queue, false);
        self.run(command, "celery_peer.py fill")["seconds"]
            .as_f64()
            .unwrap()
    }

    fn settings(&self, queue: &str) -> Settings {
        let mut settings = Settings::defaults();
        settings.database.url = self.url.clone();
        settings.database.max_connections = 20;
        settings.data_dir = std::env::temp_dir().join(format!("herald-bench-{}", self.prefix));
        settings.secret_key = Some("bench-secret".to_string().into());
        settings.layer.backend = LayerBackend::Redis;
        settings.layer.hosts = vec![self.redis.clone()];
        settings.layer.prefix = format!("{}-layer", self.prefix);
        settings.queue.backend = QueueBackend::Redis;
        settings.queue.redis_url = self.redis.clone();
        settings.queue.prefix = format!("{}-queue", self.prefix);
        settings.queue.poll_interval = Duration::from_millis(10);
        settings.celery.broker_url = format!("{}/0", self.redis).into();
        settings.celery.result_backend = format!("{}/1", self.redis).into();
        settings.celery.queues = vec![queue.to_string()];
        settings.celery.batch_size =
            env_number("HERALD_BENCH_CELERY_BATCH", settings.celery.batch_size);
        settings.celery.concurrency =
            env_number("HERALD_BENCH_CELERY_LOOPS", settings.celery.concurrency);
        settings
    }
}

/// A fresh database made by Django's `migrate` and `herald migrate`, with
/// the users and tasks the jobs name.
async fn django_database(bench: &Bench) -> Store {
    create_database(&bench.admin, url_name(&bench.url)).await;
    let mut migrate = bench.python(&["manage.py", "migrate", "-v0"], "none", false);
    let status = migrate.status().expect("python runs");
    assert!(status.success(), "Django's migrate");
    let store = migrated_store(&bench.url).await;
    let Store::Postgres(pool) = &store else {
        unreachable!("PostgreSQL")
    };
    sqlx::raw_sql(
        "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, \
                                is_staff, is_active, date_joined) \
         SELECT i, '', false, 'u' || i, '', '', '', false, true, now() FROM generate_series(1, 7000) i; \
         INSERT INTO tasks_task (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
         SELECT 'Task ' || i, 'todo', NULL, 1000 + i, 5000 + i, now(), now() FROM generate_series(1, 1000) i; \
         ANALYZE",
    )
    .execute(pool)
    .await
    .unwrap();
    store
}

fn url_name(url: &str) -> &str {
    url.rsplit_once('/').unwrap().1
}

async fn broker_left(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> (u64, u64) {
    let waiting: u64 = redis::cmd("LLEN")
        .arg(queue)
        .query_async(conn)
        .await
        .unwrap();
    let held: u64 = redis::cmd("HLEN")
        .arg("unacked")
        .query_async(conn)
        .await
        .unwrap();
    (waiting, held)
}

/// Herald drains `queue` (`jobs` messages): seconds until every message is
/// off the broker (recorded and acknowledged), and until every job is done
/// and published. `apart`: the ingress alone first, then the worker alone
/// (its clock starting when it starts), to show what each part costs.
async fn herald_drain(
    bench: &Bench,
    store: &Store,
    queue: &str,
    jobs: usize,
    apart: bool,
) -> (f64, f64) {
    let settings = bench.settings(queue);
    let mut broker = redis::Client::open(format!("{}/0", bench.redis))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let job_queue = JobQueue::connect(&settings).await.unwrap();
    let start_worker = || {
        let layer = herald::layer::build(&settings.layer).unwrap();
        Worker::start(&settings, store.clone(), layer, job_queue.clone())
    };
    let started = Instant::now();
    let worker = if apart {
        None
    } else {
        Some(start_worker().await.unwrap())
    };
    let mut ingress = Ingress::start(&settings, store.clone(), job_queue.clone())
        .await
        .unwrap();
    assert!(ingress.is_some(), "a broker is configured");
    while broker_left(&mut broker, queue).await != (0, 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "herald's ingress stalled"
        );
    }
    let taken = started.elapsed().as_secs_f64();
    let (worker, started) = match worker {
        Some(worker) => (worker, started),
        None => {
            if let Some(ingress) = ingress.take() {
                ingress.shutdown(Duration::from_secs(10)).await;
            }
            let started = Instant::now();
            (start_worker().await.unwrap(), started)
        }
    };
    while !all_published(store).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "herald stalled"
        );
    }
    let done = started.elapsed().as_secs_f64();
    assert_eq!(
        store.count_jobs(JobState::Done).await.unwrap(),
        jobs as i64,
        "every job done"
    );
    if let Some(ingress) = ingress {
        ingress.shutdown(Duration::from_secs(10)).await;
    }
    worker.shutdown(Duration::from_secs(10)).await;
    job_queue.close().await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    (taken, done)
}

/// CPU seconds used so far by herald (this process; for Celery, its worker
/// and pool, which the peer measures), the PostgreSQL backends serving the
/// bench's database, and the private redis-server: what a drain costs,
/// whatever else the machine runs at the time.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// herald's process, or the Celery worker and its pool.
    worker: f64,
    postgres: f64,
    redis: f64,
}

/// utime + stime of a process, in seconds (100 ticks a second).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl Cpu {
    fn now(bench: &Bench) -> Cpu {
        let database = format!(" {} ", url_name(&bench.url));
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let title = String::from_utf8_lossy(&title);
            if title.starts_with("postgres: ") && title.contains(&database) {
                postgres += cpu_seconds(&pid).unwrap_or_default();
            }
        }
        let redis = bench.redis_pid.map(|pid| pid.to_string());
        Cpu {
            worker: cpu_seconds("self").unwrap_or_default(),
            postgres,
            redis: redis.and_then(|pid| cpu_seconds(&pid)).unwrap_or_default(),
        }
    }

    fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            worker: self.worker - before.worker,
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
        }
    }

    /// Total CPU seconds per job.
    fn per_job(&self, jobs: usize) -> f64 {
        (self.worker + self.postgres + self.redis) / jobs as f64
    }

    /// Per job, and the rate two cores with nothing else to run would give.
    fn report(&self, worker: &str, jobs: usize) {
        let per_job = |seconds: f64| seconds * 1e6 / jobs as f64;
        println!(
            "CPU per job: {worker} {:.0} µs, PostgreSQL backends {:.0} µs, Redis {:.0} µs; \
             total {:.0} µs (two otherwise idle cores: at most {:.0} jobs/s)",
            per_job(self.worker),
            per_job(self.postgres),
            per_job(self.redis),
            self.per_job(jobs) * 1e6,
            2.0 / self.per_job(jobs)
        );
    }
}

/// Redis's own time per command (`INFO commandstats`: calls, usec).
async fn redis_time(bench: &Bench) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut conn = redis::Client::open(bench.redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Prints where Redis spent its time during a drain, per job.
async fn report_redis_time(
    bench: &Bench,
    before: std::collections::BTreeMap<String, (u64, u64)>,
    jobs: usize,
) {
    let after = redis_time(bench).await;
    let mut spent: Vec<(String, u64, u64)> = after
        .into_iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(&name).copied().unwrap_or_default();
            (name, calls - c0, usec - u0)
        })
        .filter(|(_, calls, _)| *calls > 0)
        .collect();
    spent.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    // A script's time includes the commands it ran, which count again
    // under their own names.
    eprintln!("Redis time by command during herald's drain (scripts include their commands):");
    for (name, calls, usec) in spent.iter().take(10) {
        let per_job = *usec as f64 / jobs as f64;
        eprintln!(
            "  {name}: {calls} calls, {:.2} s ({per_job:.1} µs per job)",
            *usec as f64 / 1e6
        );
    }
}

/// Empties what a drain left: notifications, ledger, outbox, results.
async fn reset(bench: &Bench, store: &Store) {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL")
    };
    for sql in [
        "TRUNCATE notifications_notification, herald_jobs, herald_outbox",
        "VACUUM ANALYZE",
    ] {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
    }
    let mut results = redis::Client::open(format!("{}/1", bench.redis))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("FLUSHDB")
        .query_async(&mut results)
        .await
        .unwrap();
}

/// Rows of notifications, and how many results say SUCCESS (sampled).
async fn check(bench: &Bench, store: &Store, jobs: usize) {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL")
    };
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications_notification")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 2 * jobs as i64, "two notifications per job");
    let mut results = redis::Client::open(format!("{}/1", bench.redis))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: u64 = redis::cmd("DBSIZE")
        .query_async(&mut results)
        .await
        .unwrap();
    assert_eq!(stored, jobs as u64, "one Celery result per job");
}

fn main() {
    herald::telemetry::init();
    let python = std::env::var("HERALD_BENCH_PYTHON")
        .expect("HERALD_BENCH_PYTHON: a python with the interop requirements (scripts/bench-celery sets it)");
    let jobs = env_number("HERALD_BENCH_JOBS", 100_000);
    let peer_jobs = env_number("HERALD_BENCH_PEER_JOBS", 2_000);
    let (private, redis) = match std::env::var("HERALD_BENCH_REDIS") {
        Ok(url) => (None, url),
        Err(_) => {
            let (server, url) = PrivateRedis::start();
            (Some(server), url)
        }
    };
    let redis_pid = private.as_ref().map(|server| server.0.id());
    let admin = env_or(
        "HERALD_BENCH_POSTGRES",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let bench = Bench {
        url: format!(
            "{}/herald_bench_celery_{tag}",
            admin.rsplit_once('/').unwrap().0
        ),
        admin,
        redis,
        redis_pid,
        python,
        prefix: format!("bench-{tag}"),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bench = std::sync::Arc::new(bench);
    runtime.block_on(async {
        // Run apart, so the database is dropped whatever happens to the run.
        let run = tokio::spawn(measure(bench.clone(), jobs, peer_jobs)).await;
        common::drop_database(&bench.admin, &bench.url).await;
        if let Err(failed) = run {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
}

/// The whole measurement; prints the table.
async fn measure(bench: std::sync::Arc<Bench>, jobs: usize, peer_jobs: usize) {
    let bench = &*bench;
    let store = django_database(bench).await;
    let queue = format!("{}-herald", bench.prefix);
    let fill = bench.fill(&queue, jobs);
    eprintln!("filled {jobs} messages in {fill:.1} s");
    let before = redis_time(bench).await;
    let cpu = Cpu::now(bench);
    let (taken, done) = herald_drain(bench, &store, &queue, jobs, false).await;
    let cpu = Cpu::now(bench).minus(&cpu);
    check(bench, &store, jobs).await;
    report_redis_time(bench, before, jobs).await;
    let apart = if std::env::var("HERALD_BENCH_APART").is_ok_and(|v| v == "1") {
        reset(bench, &store).await;
        let queue = format!("{}-herald-apart", bench.prefix);
        bench.fill(&queue, jobs);
        eprintln!("filled again: the ingress alone, then the worker alone");
        let (ingress, worker) = herald_drain(bench, &store, &queue, jobs, true).await;
        check(bench, &store, jobs).await;
        Some((ingress, worker))
    } else {
        None
    };
    // The Celery sample: the same calls, run by the application's task.
    reset(bench, &store).await;
    let source = format!("{}-peer-fill", bench.prefix);
    bench.fill(&source, peer_jobs);
    let peer = repo().join("benches/celery_peer.py");
    let peer_queue = format!("{}-peer", bench.prefix);
    let args = [
        peer.to_str().unwrap(),
        "drain",
        "--queue",
        &peer_queue,
        "--from",
        &source,
    ];
    let mut command = bench.python(&args, &peer_queue, true);
    command.args(["--jobs", &peer_jobs.to_string()]);
    let before = Cpu::now(bench);
    let peer = bench.run(command, "celery_peer.py drain");
    let mut peer_cpu = Cpu::now(bench).minus(&before);
    // The Celery worker and its pool stand where herald's process does.
    peer_cpu.worker = peer["worker_cpu_seconds"].as_f64().unwrap_or_default();
    let celery = peer["jobs_per_second"].as_f64().unwrap();
    store.close().await;

    let herald = jobs as f64 / done;
    println!(
        "\nDraining a broker queue pre-filled with file_attached.delay() messages (PostgreSQL store, Redis broker/queue/layer)"
    );
    println!(
        "| worker | messages | off the broker (s) | all done and published (s) | jobs/s | vs Celery |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| Celery 5.7 prefork, concurrency 2 | {peer_jobs} | - | {:.1} | {celery:.0} | 1.0x |",
        peer_jobs as f64 / celery
    );
    println!(
        "| herald | {jobs} | {taken:.1} | {done:.1} | {herald:.0} | {:.0}x |",
        herald / celery
    );
    if let Some((ingress, worker)) = apart {
        println!(
            "| herald, ingress alone | {jobs} | {ingress:.1} | - | {:.0} | - |",
            jobs as f64 / ingress
        );
        println!(
            "| herald, then the worker alone | {jobs} | - | {worker:.1} | {:.0} | - |",
            jobs as f64 / worker
        );
    }
    println!("\nfilled {jobs} messages with .delay() in {fill:.1} s");
    cpu.report("herald", jobs);
    peer_cpu.report("Celery (worker and pool)", peer_jobs);
    println!(
        "CPU per job, Celery / herald: {:.0}x",
        peer_cpu.per_job(peer_jobs) / cpu.per_job(jobs)
    );
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target >= 10,000 jobs/s: {} ({herald:.0})",
        met(herald >= 10_000.0)
    );
    println!(
        "target >= 100x Celery: {} ({:.0}x)",
        met(herald >= 100.0 * celery),
        herald / celery
    );
}
