//! The dashboard in a real browser (Debian's chromium driven by
//! playwright-core, tests/browser/dashboard.mjs) against real processes:
//! `herald run` on a fresh PostgreSQL database with a Redis channel layer.
//! The page signs in with the key; jobs are submitted, one of which fails
//! until dead; the page shows the counts `/api/stats` answers, and the
//! dead job with its error; its retry button re-queues it (its task now
//! exists) and the page shows it done; a `herald worker` started mid-test
//! appears within 5 s and disappears within 15 s of being killed. The
//! screenshots land in the target directory (`HERALD_BLESS=1` copies them
//! to docs/).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::http;

#[path = "fleet.rs"]
mod fleet;
use fleet::{Fleet, free_port, run, signal};

const KEY: &str = "browser-dashboard-key";
/// How long one browser step may take.
const WAIT: Duration = Duration::from_secs(40);
/// The task the failing job names; created before its retry.
const MISSING_TASK: i64 = 990_001;

/// The dashboard's steps on the shared driver.
impl Browser {
    async fn wait_js(&mut self, js: &str) {
        self.step(json!({"cmd": "wait_js", "js": js})).await;
    }

    async fn js(&mut self, js: &str) -> Value {
        self.step(json!({"cmd": "js", "js": js})).await["value"].clone()
    }

    async fn screenshot(&mut self, name: &str, full: bool) {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        self.step(json!({"cmd": "screenshot", "path": path, "full": full}))
            .await;
        if std::env::var("HERALD_BLESS").is_ok() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs")
                .join(name);
            std::fs::copy(&path, &docs).unwrap();
        }
        println!("screenshot: {}", path.display());
    }
}

/// `GET /api/stats` with the key.
async fn api_stats(fleet: &Fleet) -> Value {
    let bearer = format!("Authorization: Bearer {KEY}");
    let (status, body) = http(fleet.addr(), "GET", "/api/stats", &[&bearer], b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn kind<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap()
}

/// The fields of the jobs table, as the page marks its cells.
const FIELDS: [&str; 7] = [
    "waiting",
    "scheduled",
    "running",
    "retrying",
    "dead",
    "done_last_minute",
    "failed_last_minute",
];

/// A page expression: every cell of the jobs table shows `stats`'s count.
fn table_shows(stats: &Value) -> String {
    let expected: Vec<Value> = stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mut row = serde_json::Map::new();
            row.insert("kind".into(), k["kind"].clone());
            for field in FIELDS {
                row.insert(field.into(), k[field].clone());
            }
            Value::Object(row)
        })
        .collect();
    format!(
        "(() => {{ const expected = {}; const fields = {}; \
         for (const k of expected) {{ \
           const tr = document.querySelector(`#kinds tbody tr[data-kind=\"${{k.kind}}\"]`); \
           if (!tr) return false; \
           for (const f of fields) {{ \
             const td = tr.querySelector(`[data-field=\"${{f}}\"]`); \
             if (!td || td.textContent !== Number(k[f]).toLocaleString(\"en-US\")) return false; \
           }} }} return true; }})()",
        Value::Array(expected),
        json!(FIELDS)
    )
}

/// Polls `/api/stats` (30 s at most) until `check` holds.
async fn until_stats(fleet: &Fleet, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = api_stats(fleet).await;
        if check(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn processes_shown(browser: &mut Browser) -> i64 {
    browser
        .js("document.querySelectorAll('#processes tbody tr').length")
        .await
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_page_shows_the_fleet_and_its_buttons_work() {
    let (database, _) = crate::helpers::fresh_database_url(herald::store::Backend::Postgres).await;
    let mut fleet = Fleet {
        database,
        data: tempfile::tempdir().unwrap(),
        prefix: format!("dash{}", ulid::Ulid::generate()),
        port: 0,
    };
    let mut started = None;
    for _ in 0..5 {
        fleet.port = free_port();
        if let Some(child) = run(&fleet).await {
            started = Some(child);
            break;
        }
    }
    let herald_run = started.expect("herald run starts on a free port");
    let base = format!("http://127.0.0.1:{}", fleet.port);

    // Sign in once with the key.
    let mut browser = Browser::launch("dashboard.mjs").await;
    browser
        .step(json!({"cmd": "open", "url": format!("{base}/dashboard")}))
        .await;
    browser
        .step(json!({"cmd": "wait", "selector": "#key"}))
        .await;
    browser
        .step(json!({"cmd": "fill", "selector": "#key", "value": "wrong key"}))
        .await;
    browser
        .step(json!({"cmd": "click", "selector": "#sign-in-button"}))
        .await;
    browser
        .wait_js("document.querySelector('#sign-in-error').textContent.includes('invalid')")
        .await;
    browser
        .step(json!({"cmd": "fill", "selector": "#key", "value": KEY}))
        .await;
    browser
        .step(json!({"cmd": "click", "selector": "#sign-in-button"}))
        .await;
    browser
        .step(json!({"cmd": "wait", "selector": "#status[data-status=\"live\"]"}))
        .await;
    assert_eq!(
        browser.js("document.cookie").await,
        "",
        "the session cookie is out of the script's reach (HttpOnly)"
    );

    // A WebSocket client of user 1, reading everything it is sent.
    let secret = secrecy::SecretString::from("browser-dashboard-secret");
    let token = herald::tokens::mint(&secret, 1, Duration::from_secs(600)).unwrap();
    let url = format!(
        "ws://127.0.0.1:{}/ws/notifications/?token={token}",
        fleet.port
    );
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut socket_tx, mut socket_rx) = futures_util::StreamExt::split(socket);
    let reader = tokio::spawn(async move {
        let mut notifications = 0;
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut socket_rx).await {
            if message
                .to_text()
                .is_ok_and(|t| t.contains("\"notification\""))
            {
                notifications += 1;
            }
        }
        notifications
    });

    // Jobs: many that succeed, one for later, one whose task is missing.
    let mut jobs: Vec<Value> = (0..300)
        .map(|i| {
            json!({"kind": "notify", "payload": {"user_id": 1 + i % 30, "title": "Shipped",
                "message": "Your order shipped.", "notification_type": "info"}})
        })
        .collect();
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    jobs.push(
        json!({"kind": "notify", "run_at": later, "payload": {"user_id": 2,
        "title": "Later", "message": "m", "notification_type": "info"}}),
    );
    jobs.push(
        json!({"kind": "file_attached", "payload": {"task_id": MISSING_TASK,
        "file_id": 5, "file_name": "report.pdf", "uploaded_by": 3}}),
    );
    let bearer = format!("Authorization: Bearer {KEY}");
    let body = json!({ "jobs": jobs }).to_string();
    let (status, answer) = http(
        fleet.addr(),
        "POST",
        "/api/jobs/batch",
        &[&bearer],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let dead_id = answer["jobs"][301]["id"].as_str().unwrap().to_string();

    // User 1 is named by every 30th job: 10 notifications to deliver.
    let stats = until_stats(&fleet, "the dead job and every other job done", |s| {
        kind(s, "file_attached")["dead"] == 1
            && kind(s, "notify")["waiting"] == 0
            && kind(s, "notify")["running"] == 0
            && kind(s, "notify")["done_last_minute"].as_i64() >= Some(300)
            && s["delivery"]["processes"][0]["delivered"].as_i64() >= Some(10)
    })
    .await;
    assert_eq!(stats["delivery"]["connections"], 1, "{stats:#}");
    assert_eq!(stats["delivery"]["users_online"], 1);
    assert_eq!(stats["delivery"]["processes"][0]["delivered"], 10);
    assert_eq!(stats["layer"]["backend"], "redis");
    assert_eq!(stats["layer"]["shards"][0]["up"], true);
    assert_eq!(kind(&stats, "notify")["scheduled"], 1, "{stats:#}");
    assert_eq!(stats["dead"][0]["id"], dead_id.as_str());
    let error = stats["dead"][0]["last_error"].as_str().unwrap().to_string();
    assert!(error.contains(&MISSING_TASK.to_string()), "{error}");

    // The page shows what the API answers (read again when a window rolls
    // between the two reads).
    let mut shown = false;
    for _ in 0..5 {
        let stats = api_stats(&fleet).await;
        let answer = browser
            .try_step(json!({"cmd": "wait_js", "js": table_shows(&stats)}))
            .await;
        if answer["ok"] == true {
            shown = true;
            break;
        }
    }
    assert!(shown, "the page's jobs table never matched /api/stats");
    let row = format!("#dead tr[data-job-id=\"{dead_id}\"]");
    browser
        .step(json!({"cmd": "wait", "selector": format!("{row} .error")}))
        .await;
    let text = browser
        .step(json!({"cmd": "text", "selector": format!("{row} .error")}))
        .await;
    assert_eq!(
        text["text"],
        error.as_str(),
        "the page shows the job's last error"
    );
    browser
        .wait_js("document.querySelector('#chart-throughput canvas') !== null")
        .await;
    browser
        .wait_js("document.querySelector('#delivery-totals').textContent.startsWith('1 connections, 1 users online')")
        .await;
    // Celery's broker: reachable, the ingress's two loops, herald's queue
    // read off it (empty).
    browser
        .wait_js(&format!(
            "!document.querySelector('#broker').hidden && \
             document.querySelector('#broker-state').textContent.startsWith('redis: reachable; 2 ingress loops') && \
             document.querySelector('#broker-queues tr[data-queue=\"{}-celery\"] td[data-field=waiting]')?.textContent === '0'",
            fleet.prefix
        ))
        .await;
    // A Celery task's countdown waiting in the ledger: its Revoke button
    // cancels the job for good and the revoked list shows the task.
    let task_id = uuid::Uuid::new_v4().to_string();
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let job = json!({"kind": "notify", "payload": {"user_id": 1, "title": "Later", "message": "m", "notification_type": "info"},
        "run_at": later, "dedup_key": format!("celery:{task_id}")});
    let bearer = format!("Authorization: Bearer {KEY}");
    let (status, answer) = http(
        fleet.addr(),
        "POST",
        "/api/jobs",
        &[&bearer],
        job.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let countdown = answer["id"].as_str().unwrap().to_string();
    browser
        .step(json!({"cmd": "fill", "selector": "#history-q", "value": countdown}))
        .await;
    browser
        .step(json!({"cmd": "click", "selector": "#history-form button"}))
        .await;
    let revoke = format!("#history tr[data-job-id=\"{countdown}\"] button.revoke");
    browser
        .wait_js(&format!(
            "document.querySelector('{}') !== null",
            revoke.replace('\'', "\\'")
        ))
        .await;
    browser
        .step(json!({"cmd": "click", "selector": revoke}))
        .await;
    browser
        .wait_js(&format!(
            "document.querySelector('#revoked tr[data-task-id=\"{task_id}\"]') !== null"
        ))
        .await;
    let (_, job) = http(
        fleet.addr(),
        "GET",
        &format!("/api/jobs/{countdown}"),
        &[&bearer],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    browser.screenshot("dashboard.png", false).await;

    // The client closes (1000): the close codes count it.
    futures_util::SinkExt::send(
        &mut socket_tx,
        tokio_tungstenite::tungstenite::Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "done".into(),
            },
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        reader.await.unwrap(),
        10,
        "the client got its ten notifications"
    );
    browser
        .wait_js("document.querySelector('#delivery-totals').textContent.includes('close codes 1000: 1')")
        .await;

    // The task exists now; the retry button runs the job again.
    let pool = sqlx::PgPool::connect(&fleet.database).await.unwrap();
    sqlx::query(
        "INSERT INTO tasks_task (id, title, status, deadline, assignee_id, created_by_id, \
         created_at, updated_at) VALUES ($1, 'Quarterly report', 'open', NULL, 5, 6, now(), now())",
    )
    .bind(MISSING_TASK)
    .execute(&pool)
    .await
    .unwrap();
    browser
        .step(json!({"cmd": "click", "selector": format!("{row} button.retry")}))
        .await;
    browser
        .wait_js(&format!(
            "document.querySelector('{}') === null",
            row.replace('\'', "\\'")
        ))
        .await;
    browser
        .step(json!({"cmd": "fill", "selector": "#history-q", "value": dead_id}))
        .await;
    let state_cell = format!("#history tr[data-job-id=\"{dead_id}\"] [data-field=\"state\"]");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser
            .step(json!({"cmd": "click", "selector": "#history-form button"}))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let state = browser
            .js(&format!(
                "(document.querySelector('{}') || {{}}).textContent || ''",
                state_cell.replace('\'', "\\'")
            ))
            .await;
        if state == "done" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retried job never showed done: {state}"
        );
    }
    browser
        .wait_js(
            "document.querySelector('#kinds tbody tr[data-kind=\"file_attached\"] \
             [data-field=\"dead\"]').textContent === '0'",
        )
        .await;
    let notified: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications_notification WHERE data::text LIKE '%990001%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        notified, 2,
        "the retried job notified the assignee and the creator"
    );

    // A second worker process joins, and is killed.
    assert_eq!(processes_shown(&mut browser).await, 1);
    let worker_port = free_port();
    let worker = fleet
        .herald("worker")
        .env("HERALD_WORKER__LISTEN", format!("127.0.0.1:{worker_port}"))
        .spawn()
        .unwrap();
    let spawned = Instant::now();
    browser
        .wait_js("document.querySelectorAll('#processes tbody tr').length === 2")
        .await;
    let appeared = spawned.elapsed();
    println!("dashboard: the second worker appeared after {appeared:?}");
    assert!(
        appeared < Duration::from_secs(5),
        "appeared after {appeared:?}"
    );
    let roles = browser
        .js("[...document.querySelectorAll('#processes tbody tr')].map(r => r.dataset.role).sort().join(',')")
        .await;
    assert_eq!(roles, "run,worker");
    browser
        .step(json!({"cmd": "scroll", "selector": "#history"}))
        .await;
    browser.screenshot("dashboard-fleet.png", false).await;
    // The worker serves the same dashboard on worker.listen.
    let worker_addr = std::net::SocketAddr::from(([127, 0, 0, 1], worker_port));
    let bearer = format!("Authorization: Bearer {KEY}");
    let (status, from_worker) = http(worker_addr, "GET", "/api/stats", &[&bearer], b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{from_worker}");
    assert_eq!(from_worker["processes"].as_array().unwrap().len(), 2);
    let (status, _) = http(worker_addr, "GET", "/api/stats", &[], b"")
        .await
        .unwrap();
    assert_eq!(status, 401, "the worker's dashboard needs the key too");
    signal(&worker, "-KILL");
    let killed = Instant::now();
    browser
        .wait_js("document.querySelectorAll('#processes tbody tr').length === 1")
        .await;
    let gone = killed.elapsed();
    println!("dashboard: the killed worker disappeared after {gone:?}");
    assert!(gone < Duration::from_secs(15), "disappeared after {gone:?}");
    assert!(
        gone > Duration::from_secs(5),
        "a killed process stays until its heartbeat is dashboard.process_timeout old"
    );

    signal(&herald_run, "-TERM");
    let mut herald_run = herald_run;
    let status = tokio::time::timeout(WAIT, herald_run.wait())
        .await
        .expect("herald exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    pool.close().await;
}
