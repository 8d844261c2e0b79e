//! The operations dashboard against real SQLite, PostgreSQL and Redis:
//! access (the session cookie, its attributes, the CSRF token, the API
//! key's rule), `/api/stats` for a running worker, pause and resume
//! (durable, honoured by the worker across a restart, nothing lost),
//! cancel and discard, the history search, and that the dashboard's reads
//! of the ledger go through indexes. The page in a real browser, against
//! `herald run` and a second `herald worker`: [`browser`].

mod browser;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald::dashboard::{DashboardState, router};
use herald::fleet::{Heartbeat, Role};
use herald::layer::ChannelLayer;
use herald::layer::memory::MemoryLayer;
use herald::queue::{JobQueue, submit_many};
use herald::store::{JobState, Store};
use herald::worker::Worker;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::queue::{Case, QueueEnv, queue_env, submission};

const KEY: &str = "dashboard-test-key";

/// A dashboard served on a random port over a fresh queue environment.
struct Dash {
    addr: SocketAddr,
    env: QueueEnv,
    queue: JobQueue,
    state: DashboardState,
}

async fn serve(case: Case, key: &str, development: bool) -> Dash {
    let mut env = queue_env(case).await;
    env.settings.api.key = key.to_string().into();
    env.settings.development = development;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let secret = env.settings.secret().unwrap();
    let state = DashboardState::new(
        &env.settings,
        env.db.store.clone(),
        queue.clone(),
        Some(&secret),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = herald::http::ServeLimits {
        header_timeout: Duration::from_secs(10),
        max_pending: 64,
        grace: Duration::from_secs(1),
    };
    tokio::spawn(herald::http::serve(
        listener,
        router(state.clone(), true),
        limits,
        std::future::pending(),
    ));
    Dash {
        addr,
        env,
        queue,
        state,
    }
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// One request with `headers` (a `Host` is added unless given); reads
/// until the server closes, or for a stream, the first `limit` bytes.
async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = crate::helpers::request_head(method, path, headers, body.len());
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    // Event streams never end: stop at the first event.
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        if read == 0 {
            break;
        }
        response.extend_from_slice(&buf[..read]);
        let text = String::from_utf8_lossy(&response);
        if text.contains("text/event-stream") && text.contains("\n\n") && text.contains("data:") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Signs in with `key`: the `Cookie:` header to send and the CSRF token.
async fn sign_in(addr: SocketAddr, key: &str) -> (String, String, Answer) {
    let body = json!({ "key": key }).to_string();
    let answer = call(
        addr,
        "POST",
        "/dashboard/session",
        &["Content-Type: application/json"],
        &body,
    )
    .await;
    let cookie = answer
        .header("set-cookie")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let csrf = answer.json()["csrf"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (format!("Cookie: {cookie}"), csrf, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_session_or_the_key_and_buttons_the_csrf_token() {
    let dash = serve(Case::Sqlite, KEY, false).await;
    let addr = dash.addr;
    let store = &dash.env.db.store;

    let page = call(addr, "GET", "/dashboard", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("uPlot.iife.min.js"),
        "the page loads the vendored charts"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    let chart = call(addr, "GET", "/dashboard/assets/uPlot.iife.min.js", &[], "").await;
    assert_eq!(chart.status, 200);
    assert!(chart.body.contains("uPlot"));

    // No session: every read and button is refused.
    for (method, path) in [
        ("GET", "/api/stats"),
        ("GET", "/dashboard/events"),
        ("GET", "/dashboard/history"),
        ("GET", "/dashboard/session"),
        ("POST", "/dashboard/kinds/notify/pause"),
        ("POST", "/dashboard/jobs/01JXXXXXXXXXXXXXXXXXXXXXXX/retry"),
    ] {
        let answer = call(addr, method, path, &[], "").await;
        assert_eq!(answer.status, 401, "{method} {path}: {answer:?}");
    }

    // Signing in: JSON only, the right key only.
    let form = call(
        addr,
        "POST",
        "/dashboard/session",
        &["Content-Type: application/x-www-form-urlencoded"],
        "key=dashboard-test-key",
    )
    .await;
    assert_eq!(form.status, 415);
    let (_, _, wrong) = sign_in(addr, "not-the-key").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());

    let (cookie, csrf, answer) = sign_in(addr, KEY).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let set = answer.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains(KEY), "the cookie does not carry the key");
    assert!(csrf.len() >= 32, "{csrf}");

    let stats = call(addr, "GET", "/api/stats", &[&cookie], "").await;
    assert_eq!(stats.status, 200, "{stats:?}");
    assert_eq!(stats.json()["kinds"].as_array().unwrap().len(), 5);
    let again = call(addr, "GET", "/dashboard/session", &[&cookie], "").await;
    assert_eq!(
        again.json()["csrf"],
        csrf.as_str(),
        "a reloaded page gets its token"
    );
    let events = call(addr, "GET", "/dashboard/events", &[&cookie], "").await;
    assert_eq!(events.status, 200);
    assert!(events.body.contains("event: stats"), "{events:?}");
    assert!(events.body.contains("\"kinds\""), "{events:?}");

    // Buttons: the session's CSRF token, or nothing happens.
    let no_token = call(
        addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&cookie],
        "",
    )
    .await;
    assert_eq!(no_token.status, 403, "{no_token:?}");
    let wrong_token = call(
        addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&cookie, "X-CSRF-Token: forged"],
        "",
    )
    .await;
    assert_eq!(wrong_token.status, 403);
    assert!(
        store.paused_kinds().await.unwrap().is_empty(),
        "refused buttons change nothing"
    );
    let token = format!("X-CSRF-Token: {csrf}");
    let paused = call(
        addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&cookie, &token],
        "",
    )
    .await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(store.paused_kinds().await.unwrap(), ["notify"]);
    let unknown = call(
        addr,
        "POST",
        "/dashboard/kinds/fax/pause",
        &[&cookie, &token],
        "",
    )
    .await;
    assert_eq!(unknown.status, 404);

    // A forged or altered cookie is no session.
    let altered = format!("{}x", cookie);
    assert_eq!(
        call(addr, "GET", "/api/stats", &[&altered], "")
            .await
            .status,
        401
    );
    assert_eq!(
        call(
            addr,
            "GET",
            "/api/stats",
            &["Cookie: herald_dashboard=e30.e30.e30"],
            ""
        )
        .await
        .status,
        401
    );

    // The bearer key works without a session, and needs no CSRF token.
    let bearer = format!("Authorization: Bearer {KEY}");
    assert_eq!(
        call(addr, "GET", "/api/stats", &[&bearer], "").await.status,
        200
    );
    let wrong_bearer = call(
        addr,
        "GET",
        "/api/stats",
        &["Authorization: Bearer nope"],
        "",
    )
    .await;
    assert_eq!(wrong_bearer.status, 401);
    let resumed = call(
        addr,
        "POST",
        "/dashboard/kinds/notify/resume",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(resumed.status, 200);
    assert!(store.paused_kinds().await.unwrap().is_empty());

    // Signing out clears the cookie.
    let out = call(addr, "DELETE", "/dashboard/session", &[&cookie, &token], "").await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

/// Five refused keys from one address within a minute, and the sixth
/// sign-in from it, the right key too, gets 429 with `Retry-After` and a
/// reason, never a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_rate_limited_per_address() {
    let dash = serve(Case::Sqlite, KEY, false).await;
    for _ in 0..5 {
        let (_, _, wrong) = sign_in(dash.addr, "not-the-key").await;
        assert_eq!(wrong.status, 401, "{wrong:?}");
    }
    let (_, _, limited) = sign_in(dash.addr, KEY).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.header("set-cookie").is_none(), "no session");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(
        limited.json()["error"]
            .as_str()
            .unwrap()
            .contains("too many refused sign-ins"),
        "{limited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_development_mode_serves_local_pages() {
    let closed = serve(Case::Sqlite, "", false).await;
    let (_, _, answer) = sign_in(closed.addr, "").await;
    assert_eq!(answer.status, 401);
    assert!(answer.json()["error"].as_str().unwrap().contains("api.key"));
    for path in ["/api/stats", "/dashboard/session"] {
        assert_eq!(
            call(closed.addr, "GET", path, &[], "").await.status,
            401,
            "{path}"
        );
    }

    let dev = serve(Case::Sqlite, "", true).await;
    let session = call(dev.addr, "GET", "/dashboard/session", &[], "").await;
    assert_eq!(session.status, 200, "{session:?}");
    assert_eq!(session.json()["development"], true);
    let cookie = format!(
        "Cookie: {}",
        session
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
    );
    let csrf = format!("X-CSRF-Token: {}", session.json()["csrf"].as_str().unwrap());
    assert_eq!(
        call(dev.addr, "GET", "/api/stats", &[&cookie], "")
            .await
            .status,
        200
    );
    let pause = call(
        dev.addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&cookie],
        "",
    )
    .await;
    assert_eq!(
        pause.status, 403,
        "buttons need the CSRF token in development mode too"
    );
    let pause = call(
        dev.addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&cookie, &csrf],
        "",
    )
    .await;
    assert_eq!(pause.status, 200);
    // Not plainly local: another Host, a proxy, another site's page.
    for header in [
        "Host: evil.example",
        "X-Forwarded-For: 203.0.113.9",
        "Origin: https://evil.example",
    ] {
        let answer = call(dev.addr, "GET", "/dashboard/session", &[header], "").await;
        assert_eq!(answer.status, 401, "{header}");
        let answer = call(dev.addr, "GET", "/api/stats", &[&cookie, header], "").await;
        assert_eq!(answer.status, 401, "{header}");
    }
}

/// Waits (30 s at most) until `check` holds for the dashboard's figures.
async fn until_stats(dash: &Dash, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = serde_json::to_value(&*dash.state.stats().await).unwrap();
        if check(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kind<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap()
}

fn notify_job(user_id: i64, title: &str) -> herald::queue::Submission {
    submission(
        "notify",
        json!({"user_id": user_id, "title": title, "message": "m", "notification_type": "info"}),
    )
}

async fn start_worker(dash: &Dash) -> Worker {
    let layer: Arc<dyn ChannelLayer> =
        Arc::new(MemoryLayer::new(&dash.env.settings.layer).unwrap());
    Worker::start(
        &dash.env.settings,
        dash.env.db.store.clone(),
        layer,
        dash.queue.clone(),
    )
    .await
    .unwrap()
}

async fn stats_show_the_fleet(case: Case) {
    herald::telemetry::metrics::prometheus();
    let dash = serve(case, KEY, false).await;
    let store = &dash.env.db.store;
    let mut jobs: Vec<_> = (0..5).map(|i| notify_job(i + 1, "now")).collect();
    for i in 0..2 {
        let mut later = notify_job(10 + i, "later");
        later.run_at = Some(chrono::Utc::now() + chrono::TimeDelta::hours(1));
        jobs.push(later);
    }
    // Its task does not exist: it fails until dead (3 attempts here).
    jobs.push(submission(
        "file_attached",
        json!({"task_id": 424242, "file_id": 1, "file_name": "f.pdf", "uploaded_by": 3}),
    ));
    let submitted = submit_many(store, &dash.queue, jobs).await.unwrap();
    let missing = submitted.last().unwrap().id.clone();
    let worker = start_worker(&dash).await;
    let heartbeat = Heartbeat::start(
        store.clone(),
        Role::Worker,
        &dash.env.settings.dashboard,
        None,
    );

    let stats = until_stats(&dash, "the dead job and the done ones", |s| {
        kind(s, "file_attached")["dead"] == 1
            && kind(s, "notify")["done_last_minute"].as_i64() >= Some(5)
    })
    .await;
    let notify = kind(&stats, "notify");
    assert_eq!(notify["scheduled"], 2, "{stats:#}");
    assert_eq!(notify["waiting"], 0);
    assert_eq!(notify["dead"], 0);
    assert_eq!(notify["paused"], false);
    assert_eq!(
        kind(&stats, "file_attached")["failed_last_minute"],
        3,
        "three attempts failed"
    );
    assert_eq!(stats["totals"]["dead"], 1);
    assert_eq!(stats["totals"]["scheduled"], 2);
    let dead = &stats["dead"][0];
    assert_eq!(dead["id"], missing.as_str());
    assert!(
        dead["last_error"].as_str().unwrap().contains("424242"),
        "{dead}"
    );
    let processes = stats["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{stats:#}");
    assert_eq!(processes[0]["id"], heartbeat.id());
    assert_eq!(processes[0]["role"], "worker");
    assert_eq!(processes[0]["version"], env!("CARGO_PKG_VERSION"));
    let series = stats["series"].as_array().unwrap();
    assert!(series.len() >= 90, "15 minutes of 10-second windows");
    let done: f64 = series
        .iter()
        .map(|p| p["done_per_second"].as_f64().unwrap())
        .sum();
    assert!(done > 0.0, "the throughput chart shows the jobs");
    assert!(
        series.iter().any(|p| p["p50_ms"].is_number()),
        "run times charted"
    );
    assert_eq!(stats["layer"]["backend"], "memory");
    assert_eq!(stats["scans"].as_array().unwrap().len(), 2);
    assert!(stats["scans"][0]["next_run"].is_string());
    assert!(
        stats["problems"].as_array().unwrap().is_empty(),
        "{stats:#}"
    );

    // The same figures over HTTP with the key.
    let answer = call(
        dash.addr,
        "GET",
        "/api/stats",
        &[&format!("Authorization: Bearer {KEY}")],
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    let served = answer.json();
    assert_eq!(kind(&served, "notify")["scheduled"], 2);
    assert_eq!(kind(&served, "file_attached")["dead"], 1);

    heartbeat.stop().await;
    until_stats(&dash, "the stopped process gone", |s| {
        s["processes"].as_array().unwrap().is_empty()
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}

mod stats {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        stats_show_the_fleet(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        stats_show_the_fleet(Case::Postgres).await
    }
}

/// Counts of the ledger's states and of notifications titled `title`.
async fn done_and_rows(store: &Store, title: &str) -> (i64, i64) {
    let done = store.count_jobs(JobState::Done).await.unwrap();
    let rows = match store {
        Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM notifications_notification WHERE title = $1")
                .bind(title)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM notifications_notification WHERE title = $1")
                .bind(title)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    (done, rows)
}

/// Waits until `done` jobs are done and `rows` notifications titled
/// `title` exist, and checks nothing is left queued.
async fn wait_done(store: &Store, title: &str, done_total: i64, rows_total: i64) {
    // Generous: SQLite's queue runs the 10,000 jobs below, 16 at a time,
    // in 60-95 s on a slow 2-core machine under a full suite.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let (done, rows) = done_and_rows(store, title).await;
        if done == done_total && rows == rows_total {
            assert_eq!(store.count_jobs(JobState::Queued).await.unwrap(), 0);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {done_total} done, {rows} of {rows_total} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A paused kind's jobs wait (before any worker starts, across a worker
/// restart, and when paused mid-stream), and all run exactly once after
/// resume.
async fn pause_and_resume(case: Case) {
    let mut dash = serve(case, KEY, false).await;
    // Small batches, one at a time: the stream below lasts a few seconds,
    // so the pause lands in its middle.
    dash.env.settings.queue.batch_size = 16;
    dash.env.settings.queue.batches = 1;
    let store = &dash.env.db.store;
    let bearer = format!("Authorization: Bearer {KEY}");
    let pause = call(
        dash.addr,
        "POST",
        "/dashboard/kinds/notify/pause",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(pause.status, 200, "{pause:?}");
    let first: Vec<_> = (0..200).map(|i| notify_job(i % 20 + 1, "paused")).collect();
    submit_many(store, &dash.queue, first).await.unwrap();
    let worker = start_worker(&dash).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        done_and_rows(store, "paused").await,
        (0, 0),
        "a paused kind runs nothing"
    );
    assert_eq!(store.count_jobs(JobState::Queued).await.unwrap(), 200);

    // A restart keeps the pause.
    worker.shutdown(Duration::from_secs(5)).await;
    let worker = start_worker(&dash).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        done_and_rows(store, "paused").await,
        (0, 0),
        "still paused after a restart"
    );
    let stats = until_stats(&dash, "the paused kind", |s| {
        kind(s, "notify")["paused"] == true
    })
    .await;
    assert_eq!(kind(&stats, "notify")["waiting"], 200, "{stats:#}");

    let resume = call(
        dash.addr,
        "POST",
        "/dashboard/kinds/notify/resume",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(resume.status, 200);
    wait_done(store, "paused", 200, 200).await;

    // Paused mid-stream: what was fetched goes back, nothing is lost.
    const MORE: i64 = 10_000;
    let more: Vec<_> = (0..MORE)
        .map(|i| notify_job(i % 50 + 1, "stream"))
        .collect();
    // Submitted over about three seconds, so the stream still flows when
    // the pause takes hold (within a second) however fast the queue runs.
    let feeding = {
        let (store, queue) = (store.clone(), dash.queue.clone());
        tokio::spawn(async move {
            for chunk in more.chunks(500) {
                submit_many(&store, &queue, chunk.to_vec()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done_and_rows(store, "stream").await.1 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.pause_kind("notify").await.unwrap();
    feeding.await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let settled = done_and_rows(store, "stream").await.1;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let later = done_and_rows(store, "stream").await.1;
    assert_eq!(settled, later, "nothing of a paused kind runs");
    assert!(
        settled < MORE,
        "the pause came after the stream ended: a weaker test"
    );
    println!("dashboard pause: {settled} of {MORE} ran before the pause took hold");
    store.resume_kind("notify").await.unwrap();
    wait_done(store, "stream", 200 + MORE, MORE).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

mod pause {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        pause_and_resume(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        pause_and_resume(Case::Postgres).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis() {
        pause_and_resume(Case::Redis).await
    }
}

/// Cancel takes a queued or scheduled job out for good; discard a dead
/// one; each refuses jobs in other states.
async fn cancel_and_discard(case: Case) {
    let dash = serve(case, KEY, false).await;
    let store = &dash.env.db.store;
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut later = notify_job(1, "scheduled");
    later.run_at = Some(chrono::Utc::now() + chrono::TimeDelta::minutes(5));
    let jobs = vec![notify_job(1, "cancelled now"), later, notify_job(2, "runs")];
    let ids: Vec<String> = submit_many(store, &dash.queue, jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let post = |path: String| {
        let bearer = bearer.clone();
        async move { call(dash.addr, "POST", &path, &[&bearer], "").await }
    };
    for id in &ids[..2] {
        let answer = post(format!("/dashboard/jobs/{id}/cancel")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["state"], "cancelled");
    }
    let again = post(format!("/dashboard/jobs/{}/cancel", ids[0])).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(
        post("/dashboard/jobs/01JNOSUCHJOB0000000000000/cancel".into())
            .await
            .status,
        404
    );
    assert_eq!(
        post(format!("/dashboard/jobs/{}/explode", ids[2]))
            .await
            .status,
        404
    );

    // A worker runs the third and never the cancelled ones.
    let worker = start_worker(&dash).await;
    crate::queue::wait_for_state(store, &ids[2], JobState::Done).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids[..2] {
        assert_eq!(
            store.get_job(id).await.unwrap().unwrap().state,
            JobState::Cancelled
        );
    }
    assert_eq!(done_and_rows(store, "cancelled now").await.1, 0);
    let done = post(format!("/dashboard/jobs/{}/cancel", ids[2])).await;
    assert_eq!(done.status, 409, "a done job cannot be cancelled");

    // Discard: dead jobs only; a discarded job is not retried.
    let dead = submit_many(
        store,
        &dash.queue,
        vec![submission(
            "file_attached",
            json!({"task_id": 777777, "file_id": 1, "file_name": "f", "uploaded_by": 1}),
        )],
    )
    .await
    .unwrap()
    .remove(0)
    .id;
    assert_eq!(
        post(format!("/dashboard/jobs/{dead}/discard")).await.status,
        409
    );
    crate::queue::wait_for_state(store, &dead, JobState::Dead).await;
    let discarded = post(format!("/dashboard/jobs/{dead}/discard")).await;
    assert_eq!(discarded.status, 200, "{discarded:?}");
    assert_eq!(
        store.get_job(&dead).await.unwrap().unwrap().state,
        JobState::Discarded
    );
    assert_eq!(
        post(format!("/dashboard/jobs/{dead}/retry")).await.status,
        409
    );
    let history = call(
        dash.addr,
        "GET",
        "/dashboard/history?state=discarded",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(history.json()["jobs"][0]["id"], dead.as_str());
    worker.shutdown(Duration::from_secs(5)).await;
}

mod cancel {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        cancel_and_discard(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        cancel_and_discard(Case::Postgres).await
    }
}

/// The history finds jobs by id, dedup key, user, kind and state, waiting
/// ones too, newest first.
async fn history_search(case: Case) {
    let dash = serve(case, KEY, false).await;
    let store = &dash.env.db.store;
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut keyed = notify_job(42, "keyed");
    keyed.dedup_key = Some("order-7-shipped".into());
    let jobs = vec![
        notify_job(42, "first"),
        keyed,
        notify_job(43, "other user"),
        submission(
            "file_attached",
            json!({"task_id": 1, "file_id": 9, "file_name": "f", "uploaded_by": 42}),
        ),
    ];
    // One at a time, a few milliseconds apart: ids (ULIDs) sort by time.
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(
            herald::queue::submit(store, &dash.queue, job)
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let search = |query: &str| {
        let (bearer, query) = (bearer.clone(), query.to_string());
        async move {
            let answer = call(
                dash.addr,
                "GET",
                &format!("/dashboard/history?{query}"),
                &[&bearer],
                "",
            )
            .await;
            assert_eq!(answer.status, 200, "{query}: {answer:?}");
            answer.json()["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(&format!("q={}", ids[2])).await, [ids[2].clone()]);
    assert_eq!(search("q=order-7-shipped").await, [ids[1].clone()]);
    // User 42: named by two notify jobs and as the uploader of a file.
    let by_user = vec![ids[3].clone(), ids[1].clone(), ids[0].clone()];
    assert_eq!(search("q=42").await, by_user, "newest first");
    assert_eq!(search("q=42&kind=notify").await, by_user[1..]);
    assert_eq!(search("kind=file_attached").await, [ids[3].clone()]);
    assert_eq!(
        search("state=queued").await.len(),
        4,
        "waiting jobs are history too"
    );
    assert!(search("q=nobody").await.is_empty());
    assert_eq!(search("").await.len(), 4);
    let bad = call(
        dash.addr,
        "GET",
        "/dashboard/history?state=lost",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
    let bad = call(
        dash.addr,
        "GET",
        "/dashboard/history?kind=fax",
        &[&bearer],
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
}

mod history {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        history_search(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        history_search(Case::Postgres).await
    }
}

/// Rows in the big ledger of the index test.
const LEDGER_ROWS: i64 = 300_000;

/// On a ledger of 300,000 jobs (mostly done, some waiting, a few dead), each
/// read the dashboard makes of `herald_jobs` is planned on an index: no
/// sequential scan of the table (PostgreSQL), no `SCAN herald_jobs`
/// without an index (SQLite). Prints each plan and how long the read took.
async fn reads_use_indexes(case: Case) {
    let dash = serve(case, KEY, false).await;
    let store = &dash.env.db.store;
    let fill = "INSERT INTO herald_jobs (id, kind, payload, dedup_key, state, attempts, max_attempts, \
         last_error, run_at, created_at, updated_at) \
         SELECT {id}, \
           CASE i % 5 WHEN 0 THEN 'notify' WHEN 1 THEN 'file_attached' WHEN 2 THEN 'status_changed' \
             WHEN 3 THEN 'notify' ELSE 'notify' END, \
           '{\"user_id\": ' || (i % 5000) || ', \"title\": \"t\", \"message\": \"m\", \"notification_type\": \"g\"}', \
           CASE WHEN i % 10 = 0 THEN 'key-' || i ELSE NULL END, \
           CASE WHEN i % 1000 = 1 THEN 'dead' WHEN i % 100 = 2 THEN 'queued' ELSE 'done' END, \
           1, 5, NULL, {now}, {now}, {now} FROM {series}";
    let started = std::time::Instant::now();
    match store {
        Store::Postgres(pool) => {
            let sql = fill
                .replace("{id}", "lpad(i::text, 26, '0')")
                .replace("{now}", "now()")
                .replace("{series}", &format!("generate_series(1, {LEDGER_ROWS}) i"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
            sqlx::raw_sql("ANALYZE herald_jobs")
                .execute(pool)
                .await
                .unwrap();
        }
        Store::Sqlite(pool) => {
            let sql = fill
                .replace("{id}", "printf('%026d', i)")
                .replace("{now}", "'2026-11-30 10:00:00.000000'")
                .replace(
                    "FROM {series}",
                    &format!(
                        "FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                         WHERE i < {LEDGER_ROWS}) SELECT i FROM n)"
                    ),
                );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
            sqlx::raw_sql("ANALYZE").execute(pool).await.unwrap();
        }
    }
    println!(
        "ledger of {LEDGER_ROWS} rows written in {:?}",
        started.elapsed()
    );
    let plans = store.explain_dashboard_reads().await.unwrap();
    assert!(plans.len() >= 8, "{plans:?}");
    for (name, plan) in &plans {
        println!("--- {name}\n{plan}");
        match case {
            Case::Sqlite => {
                for line in plan.lines() {
                    assert!(
                        !line.contains("SCAN herald_jobs") || line.contains("INDEX"),
                        "{name}: a scan of the whole table:\n{plan}"
                    );
                }
                assert!(plan.contains("INDEX"), "{name}: no index:\n{plan}");
            }
            _ => {
                assert!(
                    !plan.contains("Seq Scan on herald_jobs"),
                    "{name}: a sequential scan:\n{plan}"
                );
                assert!(plan.contains("Index"), "{name}: no index:\n{plan}");
            }
        }
    }
    let open = plans
        .iter()
        .find(|(name, _)| name == "open counts")
        .unwrap();
    assert!(open.1.contains("herald_jobs_state"), "{}", open.1);
    // And the figures themselves, timed on this ledger.
    let started = std::time::Instant::now();
    let stats = dash.state.stats().await;
    println!("one read of the whole dashboard: {:?}", started.elapsed());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let started = std::time::Instant::now();
        dash.state.stats().await;
        println!("and again: {:?}", started.elapsed());
    }
    assert_eq!(stats.totals.dead, LEDGER_ROWS / 1000);
    assert_eq!(stats.totals.waiting, LEDGER_ROWS / 100);
}

mod indexes {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        reads_use_indexes(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        reads_use_indexes(Case::Postgres).await
    }
}

/// A scan's period shows who ran it and what it created; a paused scan
/// kind skips its periods until resumed.
async fn scans_show_their_runs(case: Case) {
    let dash = serve(case, KEY, false).await;
    let store = &dash.env.db.store;
    store
        .create_task(&herald::store::NewTask {
            title: "Late".into(),
            status: "open".into(),
            deadline: Some(chrono::Utc::now() - chrono::TimeDelta::hours(1)),
            assignee_id: Some(1),
            created_by_id: None,
        })
        .await
        .unwrap();
    let mut worker_settings = dash.env.settings.worker.clone();
    worker_settings.overdue_schedule = "* * * * * *".into();
    let overdue = herald::worker::scheduler::schedules(&worker_settings)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "overdue_check")
        .unwrap();
    let layer = Arc::new(MemoryLayer::new(&dash.env.settings.layer).unwrap());
    let ctx = herald::jobs::JobContext {
        store: store.clone(),
        publisher: herald::publish::outbox::Publisher::new(store.clone(), layer),
        reminder_offsets: worker_settings.reminder_offsets.clone(),
        closed_statuses: worker_settings.closed_statuses.clone(),
        notification_types: worker_settings.notification_types.clone(),
        job_id: String::new(),
    };
    let tick = |at: chrono::DateTime<chrono::Utc>| {
        herald::worker::scheduler::tick(&overdue, &ctx, "worker-a", at)
    };
    let start = chrono::Utc::now();
    assert!(tick(start).await.unwrap());
    let stats = until_stats(&dash, "the scan's run", |s| {
        s["scans"][0]["last_created"].is_number()
    })
    .await;
    let scan = &stats["scans"][0];
    assert_eq!(scan["name"], "overdue_check", "{stats:#}");
    assert_eq!(scan["last_run_by"], "worker-a");
    assert_eq!(scan["last_created"], 1, "one overdue task, one notice");
    assert!(scan["last_finished"].is_string());

    store.pause_kind("overdue_check").await.unwrap();
    let later = start + chrono::TimeDelta::seconds(5);
    assert!(
        !tick(later).await.unwrap(),
        "a paused scan skips its period"
    );
    assert_eq!(store.claimed_periods("overdue_check").await.unwrap(), 1);
    let stats = until_stats(&dash, "the paused scan", |s| {
        s["scans"][0]["paused"] == true
    })
    .await;
    assert_eq!(kind(&stats, "overdue_check")["paused"], true);
    store.resume_kind("overdue_check").await.unwrap();
    assert!(tick(later + chrono::TimeDelta::seconds(5)).await.unwrap());
    assert_eq!(store.claimed_periods("overdue_check").await.unwrap(), 2);
}

mod scans {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        scans_show_their_runs(Case::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        scans_show_their_runs(Case::Postgres).await
    }
}
