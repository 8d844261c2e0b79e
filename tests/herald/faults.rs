//! The faults a deployment meets, with exact counts: Redis restarted (empty)
//! under `herald worker` and `herald sidecar` while clients are connected
//! and notifications stream; the sidecar killed with SIGKILL mid-stream and
//! started again; Redis restarted under one `herald run`; each on every
//! queue backend. Each counts the rows, every client's deliveries by id
//! (distinct and duplicate) and the ledger's states, and waits on
//! conditions, never on time alone. (A worker killed, SIGTERM, two workers,
//! PostgreSQL restarted and Redis stopped under a worker: resilience.rs; a
//! client that never reads: the sidecar tests.)

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::config::Settings;
use herald::queue::{JobQueue, submit};
use herald::store::{JobState, Store};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::queue::{Case, queue_env, submission};
use crate::resilience::{WorkerProcess, wait_until, worker_process};
use crate::servers::RedisServer;

/// The secret resilience.rs gives its worker processes.
pub(crate) const SECRET: &str = "resilience-test-secret";

/// A `herald sidecar` on `port`, its layer on `redis`, killed when dropped.
fn sidecar_process(settings: &Settings, redis: &str, port: u16) -> WorkerProcess {
    front_process("sidecar", settings, redis, port, &[])
}

/// `herald COMMAND` (`sidecar` or `run`) serving clients on `port`, its
/// layer on `redis`, with `extra` variables; killed when dropped.
pub(crate) fn front_process(
    command: &str,
    settings: &Settings,
    redis: &str,
    port: u16,
    extra: &[(&str, &str)],
) -> WorkerProcess {
    let log = settings.data_dir.join(format!("{command}-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg(command)
        .env("DATABASE_URL", &settings.database.url)
        .env("SECRET_KEY", SECRET)
        .env("HERALD_DATA_DIR", &settings.data_dir)
        .env("HERALD_QUEUE__PREFIX", &settings.queue.prefix)
        .env("HERALD_LAYER__BACKEND", "redis")
        .env(
            "HERALD_LAYER__PREFIX",
            format!("{}.layer", settings.queue.prefix),
        )
        .env("REDIS_URL", redis)
        .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
        .env("HERALD_API__KEY", "faults-test-key")
        .env("RUST_LOG", "warn,herald=info")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("herald starts");
    WorkerProcess::from(child)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one client received: every notification id in arrival order, and
/// how often its socket was closed or broke.
#[derive(Default)]
struct Received {
    ids: Vec<i64>,
    disconnects: usize,
    connected: bool,
}

/// A browser-like client of `port` for `user`, in a task: it answers the
/// contract's way (de-duplication aside, counted here), reconnects with
/// backoff and resumes from the highest id seen, paging while `more`.
fn client(port: u16, user: i64) -> Arc<Mutex<Received>> {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = received.clone();
    tokio::spawn(async move {
        let token =
            herald::tokens::mint(&SecretString::from(SECRET), user, Duration::from_secs(600))
                .unwrap();
        loop {
            let last = state.lock().unwrap().ids.iter().max().copied();
            let query = last.map(|id| format!("?last_id={id}")).unwrap_or_default();
            let mut request = format!("ws://127.0.0.1:{port}/ws/notifications/{query}")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&token).unwrap(),
            );
            if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await {
                let _ = socket
                    .send(Message::text(json!({"type": "ping"}).to_string()))
                    .await;
                while let Some(Ok(frame)) = socket.next().await {
                    let Message::Text(text) = frame else { continue };
                    let event: Value = serde_json::from_str(&text).unwrap();
                    match event["type"].as_str() {
                        Some("pong") => state.lock().unwrap().connected = true,
                        Some("notification") => {
                            let id = event["data"]["id"].as_i64().unwrap();
                            state.lock().unwrap().ids.push(id);
                        }
                        Some("resumed") if event["data"]["more"] == true => {
                            let resume =
                                json!({"type": "resume", "last_id": event["data"]["last_id"]});
                            let _ = socket.send(Message::text(resume.to_string())).await;
                        }
                        _ => {}
                    }
                }
                let mut state = state.lock().unwrap();
                state.connected = false;
                state.disconnects += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    received
}

/// Each user's notification ids in the database.
async fn rows_by_user(store: &Store, users: &[i64]) -> HashMap<i64, Vec<i64>> {
    let mut rows = HashMap::new();
    for user in users {
        let listed = store.list_notifications_after(*user, 0, 500).await.unwrap();
        rows.insert(*user, listed.into_iter().map(|row| row.id).collect());
    }
    rows
}

/// Per client: (distinct ids received, duplicates, missing ids).
fn tally(
    clients: &[(i64, Arc<Mutex<Received>>)],
    rows: &HashMap<i64, Vec<i64>>,
) -> Vec<(usize, usize, usize)> {
    clients
        .iter()
        .map(|(user, received)| {
            let received = received.lock().unwrap();
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for id in &received.ids {
                *counts.entry(*id).or_default() += 1;
            }
            let duplicates = counts.values().map(|n| n - 1).sum();
            let missing = rows[user]
                .iter()
                .filter(|id| !counts.contains_key(id))
                .count();
            (counts.len(), duplicates, missing)
        })
        .collect()
}

/// Submits one notify job for `user`.
async fn notify(store: &Store, queue: &JobQueue, user: i64, n: usize) -> String {
    let payload = json!({"user_id": user, "title": format!("n{n}"), "message": "m",
        "notification_type": "info"});
    submit(store, queue, submission("notify", payload))
        .await
        .unwrap()
        .id
}

/// How one fault test interrupts the stream.
enum Fault {
    /// The layer's Redis stops and starts again empty.
    RedisRestart,
    /// The sidecar is killed with SIGKILL and started again.
    SidecarKill,
    /// As `RedisRestart`, under one `herald run` (worker and sidecar in one
    /// process, whose publishes wait while its memberships are restored).
    RedisRestartUnderRun,
}

async fn stream_across(fault: Fault, case: Case) {
    const USERS: [i64; 3] = [101, 102, 103];
    const JOBS: usize = 150;
    let mut redis = RedisServer::start();
    let env = queue_env(case).await;
    let store = env.db.store.clone();
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    // REDIS_URL moves the worker's layer to the private Redis; its queue
    // (on the Redis backend) stays where this test submits.
    let queue_redis = env.settings.queue_redis_url().unwrap_or_default();
    let retry = [
        ("REDIS_URL", redis.url()),
        ("HERALD_QUEUE__REDIS_URL", queue_redis.to_string()),
        ("HERALD_WORKER__OUTBOX_RETRY_EVERY", "200ms".into()),
    ];
    let retry: Vec<(&str, &str)> = retry.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let port = free_port();
    let (_worker, mut sidecar) = match fault {
        Fault::RedisRestartUnderRun => {
            let backend = match case {
                Case::Redis => "redis",
                _ => "database",
            };
            let mut run = retry.clone();
            run.extend([
                ("HERALD_QUEUE__BACKEND", backend),
                ("HERALD_QUEUE__POLL_INTERVAL", "20ms"),
            ]);
            let run = front_process("run", &env.settings, &redis.url(), port, &run);
            (None, run)
        }
        _ => {
            let (worker, _) = worker_process(&env.settings, &retry);
            (
                Some(worker),
                sidecar_process(&env.settings, &redis.url(), port),
            )
        }
    };
    let clients: Vec<(i64, Arc<Mutex<Received>>)> = USERS
        .iter()
        .flat_map(|user| [(*user, client(port, *user)), (*user, client(port, *user))])
        .collect();
    wait_until("every client joined", Duration::from_secs(30), async || {
        clients.iter().all(|(_, c)| c.lock().unwrap().connected)
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let user = USERS[n % USERS.len()];
        ids.push(notify(&store, &queue, user, n).await);
        match (&fault, n) {
            (Fault::RedisRestart | Fault::RedisRestartUnderRun, 50) => redis.stop(),
            (Fault::RedisRestart | Fault::RedisRestartUnderRun, 80) => redis.start_again(),
            (Fault::SidecarKill, 60) => {
                sidecar.kill().unwrap();
                sidecar.wait().unwrap();
            }
            (Fault::SidecarKill, 80) => {
                sidecar = sidecar_process(&env.settings, &redis.url(), port)
            }
            _ => {}
        }
        // A steady stream: one job every 40 ms.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    wait_until("every job done", Duration::from_secs(60), async || {
        store.count_jobs(JobState::Done).await.unwrap() == JOBS as i64
    })
    .await;
    let rows = rows_by_user(&store, &USERS).await;
    assert_eq!(
        rows.values().map(Vec::len).sum::<usize>(),
        JOBS,
        "one row per job"
    );
    wait_until(
        "every client has every row",
        Duration::from_secs(30),
        async || {
            tally(&clients, &rows)
                .iter()
                .all(|(_, _, missing)| *missing == 0)
        },
    )
    .await;
    let counts = tally(&clients, &rows);
    let duplicates: usize = counts.iter().map(|(_, d, _)| d).sum();
    let distinct: usize = counts.iter().map(|(n, _, _)| n).sum();
    let disconnects: usize = clients
        .iter()
        .map(|(_, c)| c.lock().unwrap().disconnects)
        .sum();
    let name = match fault {
        Fault::RedisRestart => "Redis restarted empty under worker and sidecar",
        Fault::SidecarKill => "sidecar killed -9 and restarted",
        Fault::RedisRestartUnderRun => "Redis restarted empty under herald run",
    };
    let backend = match case {
        Case::Sqlite => "SQLite",
        Case::Postgres => "PostgreSQL",
        Case::Redis => "Redis",
    };
    eprintln!(
        "fault: {name} ({backend} queue) | jobs {JOBS} | rows {JOBS} | {} clients: {distinct} deliveries distinct \
         (expected {}), {duplicates} duplicate, 0 lost | client reconnects {disconnects}",
        clients.len(),
        2 * JOBS,
    );
    assert_eq!(
        distinct,
        2 * JOBS,
        "each of the two clients per user got each row"
    );
    assert_eq!(store.count_jobs(JobState::Dead).await.unwrap(), 0);
    if let Fault::RedisRestart | Fault::RedisRestartUnderRun = fault {
        assert_eq!(disconnects, 0, "the sockets stayed open across the restart");
    }
    drop(sidecar);
}

/// One test per queue backend: `<name>::{sqlite,postgres,redis}`.
macro_rules! on_every_queue {
    ($name:ident, $fault:expr) => {
        mod $name {
            use super::{Case, Fault, stream_across};
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                stream_across($fault, Case::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                stream_across($fault, Case::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                stream_across($fault, Case::Redis).await
            }
        }
    };
}

on_every_queue!(
    redis_restarted_empty_under_worker_and_sidecar_every_client_gets_every_notification,
    Fault::RedisRestart
);
on_every_queue!(
    a_sidecar_killed_mid_stream_and_restarted_loses_nothing,
    Fault::SidecarKill
);
on_every_queue!(
    redis_restarted_empty_under_herald_run_every_client_gets_every_notification,
    Fault::RedisRestartUnderRun
);
