//! Submission benchmark: one job per request, the way a Django view submits
//! (issue 14's first target), against what Celery's `.delay()` costs the
//! same view, in one run on the same PostgreSQL and Redis.
//!
//!     scripts/bench-submit     (= cargo bench --bench submit, with the venv)
//!
//! * herald: `herald run`'s code in this process (PostgreSQL store, Redis
//!   queue, Redis layer, an API key; the worker runs the jobs meanwhile),
//!   loaded by `wrk -t2 -c16` posting a `notify` job per request for
//!   HERALD_BENCH_SECONDS (15). Reported: requests/s, p50/p99 from wrk,
//!   non-2xx answers, and whether every 202 is in the ledger (durable when
//!   answered) and ran.
//! * Celery: `benches/submit_peer.py`, 16 threads calling `notify.delay()`
//!   against the same Redis for the same time.
//! * Scripts: `herald enqueue` once per job in a loop (a process each) and
//!   `herald enqueue --file -` with the same jobs on standard input.
//!
//! Environment: HERALD_BENCH_POSTGRES, HERALD_BENCH_REDIS, HERALD_BENCH_SECONDS,
//! HERALD_BENCH_CONNECTIONS (16), HERALD_BENCH_PYTHON ("skip": no peer).

use std::process::Command;
use std::time::{Duration, Instant};

use herald::config::{LayerBackend, QueueBackend, Settings};
use herald::store::{JobState, Store};

#[path = "common.rs"]
mod common;

use common::{drop_database, drop_redis_keys, env_number, env_or, fresh_database};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-api-key";

fn settings(url: &str, redis: &str, port: u16, prefix: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.database.url = url.into();
    settings.data_dir = std::env::temp_dir().join(format!("herald-bench-{prefix}"));
    settings.secret_key = Some("bench-secret".to_string().into());
    settings.api.key = KEY.to_string().into();
    settings.sidecar.listen = format!("127.0.0.1:{port}");
    settings.layer.backend = LayerBackend::Redis;
    settings.layer.hosts = vec![redis.into()];
    settings.layer.prefix = format!("{prefix}.layer");
    settings.queue.backend = QueueBackend::Redis;
    settings.queue.redis_url = redis.into();
    settings.queue.prefix = prefix.into();
    settings
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const JOB: &str = r#"{"kind":"notify","payload":{"user_id":7,"title":"t","message":"m","notification_type":"info"}}"#;

/// wrk's figures: requests, requests/s, p50 and p99 (ms), non-2xx answers.
#[derive(Debug, Default)]
struct Wrk {
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn millis(text: &str) -> f64 {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn run_wrk(port: u16, connections: usize, seconds: usize) -> Wrk {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = '{JOB}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n"
    );
    std::fs::write(&script, lua).unwrap();
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/api/jobs"))
        .output()
        .expect("wrk runs (Debian's wrk package)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut wrk = Wrk::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => wrk.per_second = n.parse().unwrap_or(0.0),
            ["50%", t] => wrk.p50_ms = millis(t),
            ["99%", t] => wrk.p99_ms = millis(t),
            ["Non-2xx", "or", "3xx", "responses:", n] => wrk.errors = n.parse().unwrap_or(0),
            [n, "requests", "in", ..] => wrk.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    eprintln!("{text}");
    wrk
}

/// Ledger rows in any state, in one statement (separate counts per state
/// would count a job twice as it moves from queued to done).
async fn recorded(store: &Store) -> i64 {
    let Store::Postgres(pool) = store else {
        unreachable!("the bench stores on PostgreSQL")
    };
    sqlx::query_scalar("SELECT count(*) FROM herald_jobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `herald enqueue` run `count` times, then `--file -` with `count` lines:
/// jobs per second of each.
fn scripts(settings: &Settings, count: usize) -> (f64, f64) {
    let herald = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .env("DATABASE_URL", &settings.database.url)
            .env("SECRET_KEY", "bench-secret")
            .env("HERALD_DATA_DIR", &settings.data_dir)
            .env("HERALD_QUEUE__BACKEND", "redis")
            .env("HERALD_QUEUE__REDIS_URL", &settings.queue.redis_url)
            .env("HERALD_QUEUE__PREFIX", &settings.queue.prefix)
            .env("RUST_LOG", "error");
        command
    };
    let payload = r#"{"user_id":8,"title":"t","message":"m","notification_type":"info"}"#;
    let started = Instant::now();
    for _ in 0..count {
        let out = herald()
            .args(["enqueue", "notify", payload])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let looped = count as f64 / started.elapsed().as_secs_f64();
    let lines: String = (0..count).map(|_| format!("{JOB}\n")).collect();
    let started = Instant::now();
    let mut child = herald()
        .args(["enqueue", "--file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let file = count as f64 / started.elapsed().as_secs_f64();
    (looped, file)
}

fn peer(redis: &str, prefix: &str, threads: usize, seconds: usize) -> Option<serde_json::Value> {
    let python = env_or("HERALD_BENCH_PYTHON", "skip");
    if python == "skip" {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/submit_peer.py");
    let output = Command::new(python)
        .args([
            script,
            redis,
            &format!("{prefix}.celery"),
            &threads.to_string(),
            &seconds.to_string(),
        ])
        .output()
        .expect("the peer runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

#[tokio::main]
async fn main() {
    let admin = env_or(
        "HERALD_BENCH_POSTGRES",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let redis = env_or("HERALD_BENCH_REDIS", "redis://127.0.0.1:6379");
    let seconds = env_number("HERALD_BENCH_SECONDS", 15);
    let connections = env_number("HERALD_BENCH_CONNECTIONS", 16);
    let prefix = format!("herald-bench-{}", uuid::Uuid::new_v4().simple());
    let (url, store) = fresh_database(&admin, "submit").await;
    let port = free_port();
    let settings = settings(&url, &redis, port, &prefix);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let settings = settings.clone();
        tokio::spawn(async move {
            herald::startup::run(&settings, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wrk = tokio::task::spawn_blocking(move || run_wrk(port, connections, seconds))
        .await
        .unwrap();
    let ledger = recorded(&store).await;
    let caught_up = Instant::now();
    while store.count_jobs(JobState::Done).await.unwrap() < ledger {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up = caught_up.elapsed();
    let _ = stop.send(());
    let _ = serving.await;
    let (looped, file) = scripts(&settings, 200);
    let peer = peer(&redis, &prefix, connections, seconds);
    println!("\n| path | requests | per second | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|");
    println!(
        "| herald POST /api/jobs ({connections} connections) | {} | {:.0} | {:.2} | {:.2} |",
        wrk.requests, wrk.per_second, wrk.p50_ms, wrk.p99_ms
    );
    if let Some(peer) = &peer {
        println!(
            "| Celery .delay() ({connections} threads) | {} | {:.0} | {:.2} | {:.2} |",
            peer["calls"],
            peer["per_second"].as_f64().unwrap_or(0.0),
            peer["p50_ms"].as_f64().unwrap_or(0.0),
            peer["p99_ms"].as_f64().unwrap_or(0.0)
        );
        let ratio = wrk.per_second / peer["per_second"].as_f64().unwrap_or(f64::NAN);
        println!("\nherald / Celery: {ratio:.2}x");
    }
    println!(
        "non-2xx answers: {}; ledger rows: {ledger} (wrk counted {}); all done {:.1} s after \
         the load ended",
        wrk.errors,
        wrk.requests,
        catch_up.as_secs_f64()
    );
    println!("herald enqueue, one process per job: {looped:.0} jobs/s; --file -: {file:.0} jobs/s");
    store.close().await;
    drop_database(&admin, &url).await;
    drop_redis_keys(&redis, &prefix).await;
}
