//! Channel layer benchmark: herald's `RedisLayer` against Python
//! channels_redis 4.3.0 (`RedisChannelLayer`), measured in the same run
//! against the same Redis.
//!
//!     cargo bench --bench layer        (or scripts/bench-layer)
//!
//! Both sides measure the same two things, one after the other (never at
//! the same time), each under its own random key prefix:
//!
//! * throughput: one group with one member channel (made by `new_channel`,
//!   capacity raised so nothing is dropped). N `group_send`s of the
//!   contract's `send_notification` message, at most C in flight, while a
//!   receiver drains the channel concurrently in the same process. Reported:
//!   N / time until every `group_send` has returned, and N / time until the
//!   receiver has them all (end to end).
//! * latency: `group_send` paced at R messages/s for S seconds (open loop:
//!   fixed deadlines, every send its own task), each message carrying its
//!   send time taken just before `group_send`; latency = receive time - send
//!   time at the receiver. Reported: p50, p99, max.
//!
//! The Python side is `benches/layer_peer.py`, run with the interop venv's
//! python (`scripts/python-env`), which prints one JSON line.
//!
//! Environment (all optional): HERALD_BENCH_REDIS (redis://127.0.0.1:6379),
//! HERALD_BENCH_MESSAGES (20000), HERALD_BENCH_CONCURRENCY (64),
//! HERALD_BENCH_RATE (1000), HERALD_BENCH_SECONDS (5), HERALD_BENCH_WARMUP
//! (1000), HERALD_BENCH_PYTHON (a python with channels_redis; "skip" runs
//! herald alone). Every phase has a time budget, so a run ends within about
//! two minutes even when a side cannot keep up; the keys under both prefixes
//! are deleted at the end.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::config::{LayerBackend, Settings};
use herald::layer::{ChannelLayer, Message, RedisLayer};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// The throughput phase's group; the latency phase uses a fresh layer (own
/// queue key) and its own group, so a backlog left by the first phase
/// cannot inflate the second.
const GROUP: &str = "bench_notifications";
const LATENCY_GROUP: &str = "bench_latency";
/// Longest any one herald phase (sends, or the drain after them) may take.
const PHASE_BUDGET: Duration = Duration::from_secs(20);
/// Longest the latency receiver waits after the last paced send.
const LATENCY_WAIT: Duration = Duration::from_secs(10);
/// PINGs per second of the probe that runs beside herald's latency phase.
const PING_RATE: f64 = 200.0;
/// Budgets handed to the Python side: for each send phase, for each drain
/// after one, and after the last paced send.
const PY_BUDGET_SECS: f64 = 20.0;
const PY_DRAIN_SECS: f64 = 20.0;
const PY_WAIT_SECS: f64 = 10.0;
/// Hard limit on the Python process.
const PY_TIMEOUT: Duration = Duration::from_secs(85);

struct Config {
    redis: String,
    messages: usize,
    concurrency: usize,
    rate: f64,
    seconds: f64,
    warmup: usize,
    python: Option<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not valid")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Self {
        Self {
            redis: env_or("HERALD_BENCH_REDIS", "redis://127.0.0.1:6379".to_string()),
            messages: env_or("HERALD_BENCH_MESSAGES", 20_000),
            concurrency: env_or("HERALD_BENCH_CONCURRENCY", 64),
            rate: env_or("HERALD_BENCH_RATE", 1000.0),
            seconds: env_or("HERALD_BENCH_SECONDS", 5.0),
            warmup: env_or("HERALD_BENCH_WARMUP", 1000),
            python: std::env::var("HERALD_BENCH_PYTHON").ok(),
        }
    }

    fn latency_messages(&self) -> usize {
        (self.rate * self.seconds) as usize
    }
}

/// The contract's notification; `sent_ns` rides in the free-form `data.data`.
fn notification(id: usize, sent_ns: Option<u64>) -> Message {
    let mut data = json!({ "task_id": 42 });
    if let Some(ns) = sent_ns {
        data["bench_sent_ns"] = json!(ns);
    }
    let value = json!({
        "type": "send_notification",
        "data": {
            "id": id,
            "title": "Task Overdue",
            "message": "Task \"Report\" is now overdue.",
            "notification_type": "overdue",
            "is_read": false,
            "created_at": "2025-12-11T08:12:34.123456Z",
            "data": data,
        }
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Nearest-rank percentile of an ascending slice; `None` entries (messages
/// never received) sort after every number.
fn percentile(sorted: &[Option<f64>], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Default)]
struct Results {
    throughput: Option<f64>,
    end_to_end: Option<f64>,
    completed: usize,
    received: usize,
    dropped: usize,
    latency_sent: usize,
    latency_received: usize,
    rate_achieved: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    /// When group_send returned, ms after the send timestamp (latency phase).
    send_p50: Option<f64>,
    send_p99: Option<f64>,
    /// group_sends of the latency phase that never returned (Python side
    /// gives up on them after its wait).
    send_unfinished: usize,
    /// Raw Redis PING round trips at the same pace (herald side only): the
    /// floor of what any layer can do on this machine right now.
    ping_p50: Option<f64>,
    ping_p99: Option<f64>,
    /// The least any sorted-set layer can do here: one ZADD per message and
    /// one BZPOPMIN reader, same pace (herald side only): p50, p99, max.
    floor: Option<(Option<f64>, Option<f64>, Option<f64>)>,
    errors: Vec<String>,
}

// ---------------------------------------------------------------- herald

/// Receives up to `count` messages (fewer if `deadline` passes first);
/// returns how many and when the last one arrived.
async fn drain(
    layer: Arc<RedisLayer>,
    channel: Arc<str>,
    count: Arc<AtomicUsize>,
    deadline: Arc<std::sync::Mutex<tokio::time::Instant>>,
    base: Instant,
    latencies: bool,
) -> (usize, Option<Instant>, Vec<f64>) {
    let mut received = 0;
    let mut last = None;
    let mut samples = Vec::new();
    while received < count.load(Ordering::Acquire) {
        let until = *deadline.lock().unwrap();
        match tokio::time::timeout_at(until, layer.receive(&channel)).await {
            Ok(Ok(message)) => {
                let now = Instant::now();
                received += 1;
                last = Some(now);
                if latencies {
                    let sent = message["data"]["data"]["bench_sent_ns"].as_u64();
                    if let Some(sent) = sent {
                        let at = now.duration_since(base).as_nanos() as u64;
                        samples.push(at.saturating_sub(sent) as f64 / 1e6);
                    }
                }
            }
            Ok(Err(error)) => {
                eprintln!("layer bench: herald receive failed: {error}");
                break;
            }
            // The deadline may have been moved meanwhile: look again.
            Err(_) if *deadline.lock().unwrap() > until => {}
            Err(_) => break,
        }
    }
    (received, last, samples)
}

/// `n` group_sends, at most `concurrency` in flight, none started after
/// `deadline`. Returns (completed, dropped copies, errors).
async fn send_bounded(
    layer: &Arc<RedisLayer>,
    group: &'static str,
    n: usize,
    concurrency: usize,
    offset: usize,
    deadline: Instant,
) -> (usize, usize, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let layer = layer.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let (mut done, mut dropped, mut errors) = (0, 0, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || Instant::now() >= deadline {
                        break;
                    }
                    match layer
                        .group_send(group, notification(offset + i, None))
                        .await
                    {
                        Ok(report) => {
                            done += 1;
                            dropped += report.dropped;
                        }
                        Err(error) => errors.push(error.to_string()),
                    }
                }
                (done, dropped, errors)
            })
        })
        .collect();
    let (mut done, mut dropped, mut errors) = (0, 0, Vec::new());
    for worker in workers {
        let (d, x, e) = worker.await.expect("send worker panicked");
        done += d;
        dropped += x;
        errors.extend(e);
    }
    (done, dropped, errors)
}

struct Drainer {
    count: Arc<AtomicUsize>,
    deadline: Arc<std::sync::Mutex<tokio::time::Instant>>,
    task: tokio::task::JoinHandle<(usize, Option<Instant>, Vec<f64>)>,
}

impl Drainer {
    fn start(
        layer: &Arc<RedisLayer>,
        channel: &Arc<str>,
        count: usize,
        base: Instant,
        latencies: bool,
    ) -> Self {
        let count = Arc::new(AtomicUsize::new(count));
        // Far enough for the send phase; moved to its real value once the
        // sends are over.
        let deadline = Arc::new(std::sync::Mutex::new(
            tokio::time::Instant::now() + PHASE_BUDGET * 3,
        ));
        let task = tokio::spawn(drain(
            layer.clone(),
            channel.clone(),
            count.clone(),
            deadline.clone(),
            base,
            latencies,
        ));
        Self {
            count,
            deadline,
            task,
        }
    }

    /// Expects `count` messages in all, at most `wait` from now.
    async fn finish(self, count: usize, wait: Duration) -> (usize, Option<Instant>, Vec<f64>) {
        self.count.store(count, Ordering::Release);
        *self.deadline.lock().unwrap() = tokio::time::Instant::now() + wait;
        self.task.await.expect("receiver panicked")
    }
}

async fn herald_throughput(
    layer: &Arc<RedisLayer>,
    channel: &Arc<str>,
    cfg: &Config,
    base: Instant,
    out: &mut Results,
) {
    // Warm-up: connection, scripts loaded, code paths warm.
    let drainer = Drainer::start(layer, channel, cfg.warmup, base, false);
    let (sent, _, errors) = send_bounded(
        layer,
        GROUP,
        cfg.warmup,
        cfg.concurrency,
        10_000_000,
        Instant::now() + PHASE_BUDGET,
    )
    .await;
    out.errors.extend(errors);
    let (got, _, _) = drainer.finish(sent, PHASE_BUDGET).await;
    if got < sent {
        out.errors
            .push(format!("herald warm-up: {got} of {sent} received"));
    }

    let drainer = Drainer::start(layer, channel, cfg.messages, base, false);
    let start = Instant::now();
    let (completed, dropped, errors) = send_bounded(
        layer,
        GROUP,
        cfg.messages,
        cfg.concurrency,
        0,
        start + PHASE_BUDGET,
    )
    .await;
    let send_time = start.elapsed();
    let (received, last, _) = drainer.finish(completed, PHASE_BUDGET).await;
    if !errors.is_empty() {
        out.errors.push(format!(
            "herald group_send: {} errors, first: {}",
            errors.len(),
            errors[0]
        ));
    }
    out.completed = completed;
    out.dropped = dropped;
    out.received = received;
    out.throughput = Some(completed as f64 / send_time.as_secs_f64());
    out.end_to_end = last.map(|l| received as f64 / l.duration_since(start).as_secs_f64());
}

async fn herald_latency(
    layer: &Arc<RedisLayer>,
    channel: &Arc<str>,
    cfg: &Config,
    base: Instant,
    out: &mut Results,
) {
    let total = cfg.latency_messages();
    let drainer = Drainer::start(layer, channel, total, base, true);
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let start = tokio::time::Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let layer = layer.clone();
        let sent_ns = base.elapsed().as_nanos() as u64;
        sends.push(tokio::spawn(async move {
            let result = layer
                .group_send(LATENCY_GROUP, notification(i, Some(sent_ns)))
                .await;
            let done_ns = base.elapsed().as_nanos() as u64;
            result.map(|_| done_ns.saturating_sub(sent_ns) as f64 / 1e6)
        }));
    }
    let elapsed = start.elapsed();
    let mut errors = 0;
    let mut durations = Vec::with_capacity(total);
    for send in sends {
        match send.await {
            Ok(Ok(ms)) => durations.push(Some(ms)),
            _ => errors += 1,
        }
    }
    durations.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out.send_p50 = percentile(&durations, 50.0);
    out.send_p99 = percentile(&durations, 99.0);
    if errors > 0 {
        out.errors
            .push(format!("herald latency phase: {errors} group_send errors"));
    }
    let (_, _, samples) = drainer.finish(total, LATENCY_WAIT).await;
    let mut sorted: Vec<Option<f64>> = samples.into_iter().map(Some).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out.latency_sent = total;
    out.latency_received = sorted.len();
    sorted.resize(total.max(sorted.len()), None);
    out.rate_achieved = Some(total as f64 / elapsed.as_secs_f64());
    out.p50 = percentile(&sorted, 50.0);
    out.p99 = percentile(&sorted, 99.0);
    out.max = sorted.last().copied().flatten();
}

/// A layer with one channel (from `new_channel`) in `group`; capacity
/// raised so that nothing is dropped.
async fn herald_layer(
    cfg: &Config,
    prefix: &str,
    group: &str,
) -> Result<(Arc<RedisLayer>, Arc<str>), String> {
    let mut settings = Settings::defaults().layer;
    settings.backend = LayerBackend::Redis;
    settings.hosts = vec![cfg.redis.clone()];
    settings.prefix = prefix.to_string();
    settings.capacity = 100_000.max(cfg.messages + cfg.warmup + cfg.latency_messages());
    let layer = Arc::new(RedisLayer::new(&settings).map_err(|e| format!("herald layer: {e}"))?);
    let channel = layer
        .new_channel("specific")
        .await
        .map_err(|e| format!("herald new_channel: {e}"))?;
    layer
        .group_add(group, &channel)
        .await
        .map_err(|e| format!("herald group_add: {e}"))?;
    Ok((layer, channel.into()))
}

async fn close_layer(layer: &RedisLayer, group: &str, channel: &str, out: &mut Results) {
    if let Err(error) = layer.group_discard(group, channel).await {
        out.errors.push(format!("herald group_discard: {error}"));
    }
    if layer.dropped_total() > 0 {
        out.errors
            .push(format!("herald dropped {} messages", layer.dropped_total()));
    }
    layer.close();
}

/// PINGs paced at `rate`/s for `seconds` on a connection of their own: raw
/// round trip p50 and p99 in ms. Run beside herald's latency phase, it shows
/// what the machine itself allowed at that moment (CPU contention shows up
/// here as well as in herald's tail).
async fn ping_floor(
    redis_url: String,
    rate: f64,
    seconds: f64,
) -> Result<(Option<f64>, Option<f64>), String> {
    let client = redis::Client::open(redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let count = (rate * seconds) as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let t = Instant::now();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        samples.push(Some(t.elapsed().as_secs_f64() * 1e3));
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((percentile(&samples, 50.0), percentile(&samples, 99.0)))
}

/// The floor: `rate`/s for `seconds`, each message one `ZADD` of its send
/// time (a spawned task on the shared connection), one reader on its own
/// connection looping `BZPOPMIN`. Latency = pop time - send time.
async fn raw_floor(
    cfg: &Config,
    prefix: &str,
) -> Result<(Option<f64>, Option<f64>, Option<f64>), String> {
    let client = redis::Client::open(cfg.redis.as_str()).map_err(|e| e.to_string())?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .map_err(|e| e.to_string())?;
    let key = format!("{prefix}floor");
    let total = cfg.latency_messages();
    let base = Instant::now();
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.seconds) + LATENCY_WAIT;
    let receiver = {
        let key = key.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(total);
            while samples.len() < total && Instant::now() < deadline {
                let popped: Option<(String, String, f64)> = redis::cmd("BZPOPMIN")
                    .arg(&key)
                    .arg(1.0)
                    .query_async(&mut reader)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some((_, member, _)) = popped {
                    let at = base.elapsed().as_nanos() as u64;
                    let sent: u64 = member.split(':').next().unwrap_or("0").parse().unwrap_or(0);
                    samples.push(Some(at.saturating_sub(sent) as f64 / 1e6));
                }
            }
            Ok::<_, String>(samples)
        })
    };
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let start = tokio::time::Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let mut conn = conn.clone();
        let key = key.clone();
        let sent = base.elapsed().as_nanos() as u64;
        sends.push(tokio::spawn(async move {
            redis::cmd("ZADD")
                .arg(&key)
                .arg(0)
                .arg(format!("{sent}:{i}"))
                .query_async::<()>(&mut conn)
                .await
        }));
    }
    for send in sends {
        send.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let mut samples = receiver.await.map_err(|e| e.to_string())??;
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples.resize(total.max(samples.len()), None);
    Ok((
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().flatten(),
    ))
}

async fn run_herald(cfg: &Config, prefix: &str) -> Results {
    let mut out = Results::default();
    let base = Instant::now();

    eprintln!(
        "layer bench: herald throughput: {} group_sends, {} in flight",
        cfg.messages, cfg.concurrency
    );
    match herald_layer(cfg, prefix, GROUP).await {
        Ok((layer, channel)) => {
            herald_throughput(&layer, &channel, cfg, base, &mut out).await;
            close_layer(&layer, GROUP, &channel, &mut out).await;
        }
        Err(error) => out.errors.push(error),
    }

    eprintln!(
        "layer bench: herald latency: {} msg/s for {} s (Redis PING probe at {PING_RATE} /s beside it)",
        cfg.rate, cfg.seconds
    );
    match herald_layer(cfg, prefix, LATENCY_GROUP).await {
        Ok((layer, channel)) => {
            let probe = tokio::spawn(ping_floor(cfg.redis.clone(), PING_RATE, cfg.seconds));
            herald_latency(&layer, &channel, cfg, base, &mut out).await;
            close_layer(&layer, LATENCY_GROUP, &channel, &mut out).await;
            match probe.await.expect("ping probe panicked") {
                Ok((p50, p99)) => (out.ping_p50, out.ping_p99) = (p50, p99),
                Err(error) => out.errors.push(format!("ping probe: {error}")),
            }
        }
        Err(error) => out.errors.push(error),
    }

    eprintln!(
        "layer bench: raw Redis floor: ZADD -> BZPOPMIN at {} msg/s for {} s",
        cfg.rate, cfg.seconds
    );
    match raw_floor(cfg, prefix).await {
        Ok(floor) => out.floor = Some(floor),
        Err(error) => out.errors.push(format!("raw floor: {error}")),
    }
    out
}

// ---------------------------------------------------------------- python

/// The interop venv's python: HERALD_BENCH_PYTHON, else the last line of
/// `scripts/python-env` (which creates or reuses the venv).
async fn find_python(cfg: &Config) -> Result<String, String> {
    if let Some(python) = &cfg.python {
        return Ok(python.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env");
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&script)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "scripts/python-env took over 5 minutes".to_string())?
    .map_err(|e| format!("{}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("scripts/python-env failed ({})", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .ok_or_else(|| "scripts/python-env printed nothing".to_string())
}

fn get_f64(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

fn get_usize(value: &Value, key: &str) -> usize {
    value.get(key).and_then(Value::as_u64).unwrap_or(0) as usize
}

async fn run_python(cfg: &Config, prefix: &str) -> Result<Results, String> {
    let python = find_python(cfg).await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/layer_peer.py");
    eprintln!("layer bench: channels_redis via {python}");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--redis", &cfg.redis, "--prefix", prefix])
        .args(["--messages", &cfg.messages.to_string()])
        .args(["--concurrency", &cfg.concurrency.to_string()])
        .args(["--rate", &cfg.rate.to_string()])
        .args(["--seconds", &cfg.seconds.to_string()])
        .args(["--warmup", &cfg.warmup.to_string()])
        .args(["--budget", &PY_BUDGET_SECS.to_string()])
        .args(["--drain", &PY_DRAIN_SECS.to_string()])
        .args(["--wait", &PY_WAIT_SECS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{python}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let run = async {
        let mut text = String::new();
        stdout
            .read_to_string(&mut text)
            .await
            .map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, text))
    };
    let (status, text) = tokio::time::timeout(PY_TIMEOUT, run)
        .await
        .map_err(|_| format!("layer_peer.py took over {PY_TIMEOUT:?}; killed"))??;
    if !status.success() {
        return Err(format!("layer_peer.py failed ({status})"));
    }
    let line = text
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .ok_or("layer_peer.py printed no JSON line")?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("layer_peer.py output: {e}"))?;
    Ok(Results {
        throughput: get_f64(&v, "throughput_msgs_per_s"),
        end_to_end: get_f64(&v, "end_to_end_msgs_per_s"),
        completed: get_usize(&v, "throughput_completed"),
        received: get_usize(&v, "throughput_received"),
        dropped: 0,
        latency_sent: get_usize(&v, "latency_sent"),
        latency_received: get_usize(&v, "latency_received"),
        rate_achieved: get_f64(&v, "latency_rate_achieved"),
        p50: get_f64(&v, "latency_p50_ms"),
        p99: get_f64(&v, "latency_p99_ms"),
        max: get_f64(&v, "latency_max_ms"),
        send_p50: get_f64(&v, "group_send_p50_ms"),
        send_p99: get_f64(&v, "group_send_p99_ms"),
        send_unfinished: get_usize(&v, "latency_sends_unfinished"),
        ping_p50: None,
        ping_p99: None,
        floor: None,
        errors: Vec::new(),
    })
}

// ---------------------------------------------------------------- cleanup

/// Deletes every key under `prefixes`; returns how many.
async fn delete_prefixes(redis_url: &str, prefixes: &[&str]) -> Result<usize, String> {
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut deleted = 0;
    for prefix in prefixes {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for chunk in keys.chunks(500) {
            deleted += redis::cmd("DEL")
                .arg(chunk)
                .query_async::<usize>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(deleted)
}

// ---------------------------------------------------------------- report

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

fn fmt_ms(v: Option<f64>, received: usize, sent: usize, wait: f64) -> String {
    match v {
        Some(v) => format!("{v:.3}"),
        None if received < sent => format!("> {wait:.0} s (lost)"),
        None => "n/a".into(),
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.1}x", n / d),
        _ => "n/a".into(),
    }
}

/// channels_redis/herald for a latency; a channels_redis percentile that
/// fell on messages never received counts as at least the wait.
fn latency_ratio(py: Option<f64>, py_lost: bool, herald: Option<f64>) -> String {
    match (py, herald) {
        (None, Some(h)) if py_lost && h > 0.0 => format!("> {:.0}x", PY_WAIT_SECS * 1e3 / h),
        _ => ratio(py, herald),
    }
}

fn print_table(cfg: &Config, h: &Results, p: Option<&Results>) {
    let empty = Results::default();
    let py = p.unwrap_or(&empty);
    let lw = LATENCY_WAIT.as_secs_f64();
    let py_lost = py.latency_received < py.latency_sent;
    let py_send = |v: Option<f64>| match v {
        None if py.send_unfinished > 0 => format!("> {PY_WAIT_SECS:.0} s (unfinished)"),
        v => fmt_ms(v, 1, 1, 0.0),
    };
    let rows: Vec<[String; 4]> = vec![
        [
            "group_send throughput (msgs/s)".into(),
            fmt_rate(h.throughput),
            fmt_rate(py.throughput),
            ratio(h.throughput, py.throughput),
        ],
        [
            "end-to-end, all received (msgs/s)".into(),
            fmt_rate(h.end_to_end),
            fmt_rate(py.end_to_end),
            ratio(h.end_to_end, py.end_to_end),
        ],
        [
            format!("latency p50 @ {:.0} msg/s (ms)", cfg.rate),
            fmt_ms(h.p50, h.latency_received, h.latency_sent, lw),
            fmt_ms(py.p50, py.latency_received, py.latency_sent, PY_WAIT_SECS),
            latency_ratio(py.p50, py_lost, h.p50),
        ],
        [
            format!("latency p99 @ {:.0} msg/s (ms)", cfg.rate),
            fmt_ms(h.p99, h.latency_received, h.latency_sent, lw),
            fmt_ms(py.p99, py.latency_received, py.latency_sent, PY_WAIT_SECS),
            latency_ratio(py.p99, py_lost, h.p99),
        ],
        [
            format!("latency max @ {:.0} msg/s (ms)", cfg.rate),
            fmt_ms(h.max, h.latency_received, h.latency_sent, lw),
            fmt_ms(py.max, py.latency_received, py.latency_sent, PY_WAIT_SECS),
            latency_ratio(py.max, py_lost, h.max),
        ],
        [
            "  group_send returned, p50 (ms)".into(),
            fmt_ms(h.send_p50, 1, 1, 0.0),
            py_send(py.send_p50),
            latency_ratio(py.send_p50, py.send_unfinished > 0, h.send_p50),
        ],
        [
            "  group_send returned, p99 (ms)".into(),
            fmt_ms(h.send_p99, 1, 1, 0.0),
            py_send(py.send_p99),
            latency_ratio(py.send_p99, py.send_unfinished > 0, h.send_p99),
        ],
    ];
    let header = ["metric", "herald", "channels_redis", "ratio"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        println!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    println!();
    println!(
        "Channel layer: herald vs channels_redis 4.3.0 (Redis {})",
        cfg.redis
    );
    println!(
        "N = {} group_sends, concurrency = {} in flight, latency at {} msg/s for {} s ({} messages), warm-up {}",
        cfg.messages,
        cfg.concurrency,
        cfg.rate,
        cfg.seconds,
        cfg.latency_messages(),
        cfg.warmup
    );
    println!(
        "ratio: herald/channels_redis for throughput, channels_redis/herald for latency (higher = herald better)"
    );
    println!();
    line(header);
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 1) + ":",
        "-".repeat(widths[2] + 1) + ":",
        "-".repeat(widths[3] + 1) + ":"
    );
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
    println!();
    println!(
        "herald: {}/{} group_sends completed, {} received, {} copies dropped; latency {}/{} received, paced at {} msg/s",
        h.completed,
        cfg.messages,
        h.received,
        h.dropped,
        h.latency_received,
        h.latency_sent,
        fmt_rate(h.rate_achieved)
    );
    if let Some(py) = p {
        println!(
            "channels_redis: {}/{} group_sends completed, {} received; latency {}/{} received ({} group_sends unfinished), paced at {} msg/s",
            py.completed,
            cfg.messages,
            py.received,
            py.latency_received,
            py.latency_sent,
            py.send_unfinished,
            fmt_rate(py.rate_achieved)
        );
    }
    println!(
        "Redis PING round trip (probe at {PING_RATE} /s during herald's latency phase): p50 {} ms, p99 {} ms",
        fmt_ms(h.ping_p50, 1, 1, 0.0),
        fmt_ms(h.ping_p99, 1, 1, 0.0)
    );
    if let Some((p50, p99, max)) = h.floor {
        println!(
            "raw Redis floor at {} msg/s (one ZADD per message, one BZPOPMIN reader, no layer): p50 {} ms, p99 {} ms, max {} ms",
            cfg.rate,
            fmt_ms(p50, 1, 1, 0.0),
            fmt_ms(p99, 1, 1, 0.0),
            fmt_ms(max, 1, 1, 0.0)
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let (Some(ht), Some(pt)) = (h.throughput, py.throughput) {
        println!(
            "target group_send throughput >= 5x channels_redis: {} ({:.1}x)",
            verdict(ht >= 5.0 * pt),
            ht / pt
        );
    }
    println!(
        "target herald p99 < 2 ms at {} msg/s: {} ({})",
        cfg.rate,
        verdict(h.p99.is_some_and(|p| p < 2.0)),
        fmt_ms(h.p99, h.latency_received, h.latency_sent, lw)
    );
    println!(
        "Measured on this machine ({} cores), both sides in one run against the same Redis, one after the other; other load on the machine makes the numbers noisy.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn main() {
    let cfg = Config::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let herald_prefix = format!("benchh{}", &id[..10]);
    let python_prefix = format!("benchp{}", &id[..10]);
    let started = Instant::now();
    let (herald, python) = runtime.block_on(async {
        let herald = run_herald(&cfg, &herald_prefix).await;
        let python = if cfg.python.as_deref() == Some("skip") {
            None
        } else {
            match run_python(&cfg, &python_prefix).await {
                Ok(results) => Some(results),
                Err(error) => {
                    eprintln!("layer bench: channels_redis side failed: {error}");
                    None
                }
            }
        };
        // Let the herald receive loop notice it was closed before the keys go.
        tokio::time::sleep(Duration::from_millis(100)).await;
        match delete_prefixes(&cfg.redis, &[&herald_prefix, &python_prefix]).await {
            Ok(n) => eprintln!(
                "layer bench: deleted {n} keys under {herald_prefix}* and {python_prefix}*"
            ),
            Err(error) => eprintln!("layer bench: cleanup failed: {error}"),
        }
        (herald, python)
    });
    for error in &herald.errors {
        eprintln!("layer bench: {error}");
    }
    print_table(&cfg, &herald, python.as_ref());
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    runtime.shutdown_timeout(Duration::from_secs(2));
}
