//! WebSocket load generator (issue 14's fourth target): many authenticated
//! clients of herald's sidecar, one user each, and a fan-out to all of them
//! through the channel layer, with the report `benches/ws_load.py` gives.
//! Python cannot hold a hundred thousand sockets; this does, in several
//! processes (each under the 20,000 open-file limit), driven by
//! `benches/sidecar-fleet`.
//!
//!     ws_load hold  --address HOST:PORT --first-user N --users N
//!                   [--source 127.0.0.2] [--server-pid PID] [--connect-budget S]
//!                   [--wait S]
//!     ws_load send  --redis URL --prefix P --first-user N --users N
//!
//! `hold` connects its clients (token as subprotocol, signed with
//! SECRET_KEY), prints `{"connected": n, "rss_kib": ...}`, then waits until
//! each client got one notification (or `--wait` passes) and prints
//! `{"delivered": n, "expected": n, "p50_ms", "p99_ms", "max_ms"}`. `send`
//! publishes one notification to each user's group as the worker does
//! (herald's Redis layer, `group_send_many`), stamping the send time in
//! the payload, and prints `{"sent": n, "seconds": s}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Handshakes in flight at once per process.
const CONNECTING: usize = 256;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
}

/// Milliseconds at quantile `q` of sorted latencies (ns).
fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1e6
}

/// One client: connects from `source`, then records the latency of the
/// first notification it gets (ns since it was sent).
async fn client(
    address: SocketAddr,
    source: IpAddr,
    token: String,
    latency: Arc<AtomicU64>,
) -> Result<(), String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(address).await.map_err(|e| e.to_string())?;
    let mut request = format!("ws://{address}/ws/notifications/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let header = HeaderValue::from_str(&token).map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", header);
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    // A pong says the sidecar joined this client's group.
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"pong\"") => break,
            Some(Ok(_)) => {}
            _ => return Err("closed before its pong".into()),
        }
    }
    let joined = latency.clone();
    joined.store(u64::MAX, Ordering::Release); // connected, nothing received
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if event["type"] == "notification"
                && let Some(sent) = event["data"]["data"]["sent_ns"].as_u64()
            {
                let _ = latency.compare_exchange(
                    u64::MAX,
                    now_ns().saturating_sub(sent),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
    });
    Ok(())
}

async fn hold(args: &[String]) {
    let address: SocketAddr = arg(args, "--address")
        .expect("--address")
        .parse()
        .expect("an IP:PORT address");
    let source: IpAddr = arg(args, "--source")
        .unwrap_or_else(|| "127.0.0.1".into())
        .parse()
        .expect("--source is an IP");
    let first = number(args, "--first-user", 1) as i64;
    let users = number(args, "--users", 1000) as usize;
    let budget = Duration::from_secs(number(args, "--connect-budget", 300));
    let wait = Duration::from_secs(number(args, "--wait", 60));
    let pid = arg(args, "--server-pid");
    let secret = SecretString::from(std::env::var("SECRET_KEY").expect("SECRET_KEY"));
    let latencies: Vec<Arc<AtomicU64>> = (0..users).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let failed = Arc::new(AtomicUsize::new(0));
    let rss_idle = pid.as_deref().and_then(rss_kib);
    let started = Instant::now();
    futures_util::stream::iter(latencies.iter().enumerate())
        .for_each_concurrent(CONNECTING, |(i, latency)| {
            let token = herald::tokens::mint(&secret, first + i as i64, Duration::from_secs(7200))
                .expect("a token");
            let (latency, failed) = (latency.clone(), failed.clone());
            async move {
                if started.elapsed() > budget
                    || client(address, source, token, latency).await.is_err()
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    let connected = latencies
        .iter()
        .filter(|l| l.load(Ordering::Acquire) == u64::MAX)
        .count();
    let rss = pid.as_deref().and_then(rss_kib);
    println!(
        "{}",
        json!({"connected": connected, "failed": failed.load(Ordering::Relaxed),
               "seconds": started.elapsed().as_secs_f64(), "rss_idle_kib": rss_idle,
               "rss_kib": rss})
    );
    let deadline = Instant::now() + wait;
    loop {
        let pending = latencies
            .iter()
            .filter(|l| l.load(Ordering::Acquire) == u64::MAX)
            .count();
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got: Vec<u64> = latencies
        .iter()
        .map(|l| l.load(Ordering::Acquire))
        .filter(|ns| *ns != 0 && *ns != u64::MAX)
        .collect();
    got.sort_unstable();
    println!(
        "{}",
        json!({"delivered": got.len(), "expected": connected,
               "p50_ms": quantile(&got, 0.5), "p99_ms": quantile(&got, 0.99),
               "max_ms": quantile(&got, 1.0),
               "rss_after_kib": pid.as_deref().and_then(rss_kib)})
    );
}

async fn send(args: &[String]) {
    let redis = arg(args, "--redis").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let first = number(args, "--first-user", 1) as i64;
    let users = number(args, "--users", 1000) as i64;
    let mut settings = herald::config::Settings::defaults().layer;
    settings.backend = herald::config::LayerBackend::Redis;
    settings.hosts = vec![redis];
    settings.prefix = arg(args, "--prefix").expect("--prefix");
    settings.capacity = 100_000;
    let layer = herald::layer::build(&settings).expect("a Redis layer");
    let started = Instant::now();
    let ids: Vec<i64> = (first..first + users).collect();
    let mut failed = 0;
    for chunk in ids.chunks(500) {
        // Stamped just before its chunk goes: latency from the send call.
        let sends = chunk
            .iter()
            .map(|user| {
                let data = json!({"id": user, "title": "fan-out", "message": "m",
                    "notification_type": "info", "is_read": false,
                    "created_at": "2026-11-30T00:00:00.000000Z",
                    "data": {"sent_ns": now_ns()}});
                let Value::Object(message) = json!({"type": "send_notification", "data": data})
                else {
                    unreachable!()
                };
                (herald::publish::notification_group(*user), message)
            })
            .collect();
        failed += layer
            .group_send_many(sends)
            .await
            .iter()
            .filter(|r| r.is_err())
            .count();
    }
    println!(
        "{}",
        json!({"sent": users, "failed": failed, "seconds": started.elapsed().as_secs_f64()})
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("hold") => hold(&args).await,
        Some("send") => send(&args).await,
        // `cargo bench` runs every bench with --bench: nothing to do alone.
        _ => eprintln!("ws_load: hold|send (see benches/sidecar-fleet)"),
    }
}
