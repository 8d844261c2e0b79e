//! The demo page in a real browser (Debian's chromium driven by
//! playwright-core, tests/browser/driver.mjs): `herald run` serves `/`, the
//! page gets a development token and shows a notification made by the job
//! its button submits; then herald stops, a job run by `herald worker`
//! creates a notification while no sidecar is up, herald starts again, and
//! the page shows that notification exactly once.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one step may take (the page reconnects with backoff ≤ 5 s).
const WAIT: Duration = Duration::from_secs(40);
const DOWN_TITLE: &str = "Created while herald was down";

/// A `herald` command sharing one data directory (SQLite store and queue,
/// generated secret) and one Redis channel layer prefix.
fn herald(data_dir: &Path, port: u16, prefix: &str, role: &str) -> Command {
    let redis =
        std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg(role)
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env("REDIS_URL", redis)
        .env("HERALD_DATA_DIR", data_dir)
        .env("HERALD_LAYER__BACKEND", "redis")
        .env("HERALD_LAYER__PREFIX", prefix)
        .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// SIGTERM, then the exit status (herald exits 0 on SIGTERM).
async fn terminate(mut child: Child) {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("herald exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// `herald run` on `port`, once it answers there; `None` if it exited
/// first (another test took the port between our probe and its bind).
async fn run_on(data_dir: &Path, port: u16, prefix: &str) -> Option<Child> {
    let mut run = herald(data_dir, port, prefix, "run")
        .arg("--dev")
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if run.try_wait().unwrap().is_some() {
            return None;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(run);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("herald run never answered on port {port}");
}

/// A free port now (it may be taken again before herald binds it).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// A browser driver (`tests/browser/<script>`, playwright-core driving
/// Debian's chromium), stepped one JSON command at a time; shared by the
/// demo page's test and the dashboard's.
pub(crate) struct Browser {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    /// Starts `node tests/browser/<script>`.
    pub(crate) async fn launch(script: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser")
            .join(script);
        let mut child = Command::new("node")
            .arg(&path)
            .env("DRIVER_WAIT_MS", WAIT.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "node runs {} (./scripts/test installs it): {e}",
                    path.display()
                )
            });
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser {
            _child: child,
            stdin,
            lines,
        }
    }

    /// Sends `command`; its answer (`ok` or not).
    pub(crate) async fn try_step(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(WAIT + Duration::from_secs(20), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer {command}"))
            .unwrap()
            .unwrap_or_else(|| {
                panic!("the browser driver exited at {command} (playwright-core and chromium installed?)")
            });
        serde_json::from_str(&answer).unwrap()
    }

    /// Sends `command`; the answer, which must be ok.
    pub(crate) async fn step(&mut self, command: Value) -> Value {
        let answer = self.try_step(command.clone()).await;
        assert_eq!(answer["ok"], true, "{command}: {answer}");
        answer
    }

    /// Once the page is connected, clicks its button that submits a job.
    async fn send_test_notification(&mut self) {
        self.step(json!({"cmd": "wait_status", "status": "open"}))
            .await;
        self.step(json!({"cmd": "click", "selector": "#notify"}))
            .await;
    }

    async fn count(&mut self, title: &str) -> i64 {
        let answer = self.step(json!({"cmd": "count", "title": title})).await;
        answer["count"].as_i64().unwrap()
    }
}

/// The notifications of the embedded store whose title is `title`.
async fn rows_titled(data_dir: &Path, title: &str) -> i64 {
    let url = format!("sqlite://{}", data_dir.join("herald.sqlite3").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications_notification WHERE title = ?")
            .bind(title)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_shows_job_notifications_and_what_it_missed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let prefix = format!("browser{}", ulid::Ulid::generate());
    let mut started = None;
    for _ in 0..5 {
        let port = free_port();
        if let Some(run) = run_on(data, port, &prefix).await {
            started = Some((port, run));
            break;
        }
    }
    let (port, run) = started.expect("herald run starts on a free port");

    let mut browser = Browser::launch("driver.mjs").await;
    let url = format!("http://127.0.0.1:{port}/");
    browser.step(json!({"cmd": "open", "url": url})).await;
    browser.send_test_notification().await;
    let shown = browser
        .step(json!({"cmd": "wait_count", "title": "Test notification", "count": 1}))
        .await;
    assert_eq!(shown["count"], 1);

    // herald stops: the page loses its connection and retries.
    terminate(run).await;
    browser
        .step(json!({"cmd": "wait_status", "status": "reconnecting"}))
        .await;

    // While no sidecar is up, a job creates a notification for user 1.
    let payload = json!({"user_id": 1, "title": DOWN_TITLE,
        "message": "The page was not connected.", "notification_type": "generic"});
    let enqueued = herald(data, port, &prefix, "enqueue")
        .args(["notify", &payload.to_string()])
        .output()
        .await
        .unwrap();
    assert!(enqueued.status.success(), "{enqueued:?}");
    let worker = herald(data, port, &prefix, "worker").spawn().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while rows_titled(data, DOWN_TITLE).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker made no row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(worker).await;
    assert_eq!(
        browser.count(DOWN_TITLE).await,
        0,
        "nothing could deliver it"
    );

    // herald starts again: the page resumes from the last id it saw.
    let run = run_on(data, port, &prefix)
        .await
        .expect("herald run starts again on its port");
    let resumed = browser
        .step(json!({"cmd": "wait_count", "title": DOWN_TITLE, "count": 1}))
        .await;
    assert_eq!(resumed["count"], 1);
    // Live again: a second job's notification arrives, the missed one is
    // still shown once, and the first is not repeated.
    browser.send_test_notification().await;
    browser
        .step(json!({"cmd": "wait_count", "title": "Test notification", "count": 2}))
        .await;
    assert_eq!(browser.count(DOWN_TITLE).await, 1);
    assert_eq!(browser.count("Test notification").await, 2);
    assert_eq!(rows_titled(data, "Test notification").await, 2);
    terminate(run).await;
}
