//! The Celery drop-in against the real celery package: the Django project's
//! `@shared_task` functions (tests/interop/django_app/apps/*/tasks.py),
//! routed to herald's queue by `CELERY_TASK_ROUTES`, called with `.delay()`
//! and `apply_async()` as the application calls them, run by `herald run`
//! on the project's PostgreSQL database; their notifications reach the
//! application's consumer under daphne, and `AsyncResult.get()` returns or
//! raises as under Celery. Each test has a redis-server of its own as
//! Celery's broker (DB 0) and result backend (DB 1), and its own queue name;
//! the task the application keeps on Celery counts its runs in DB 2. The
//! cases written `on_both_brokers!` run a second time with RabbitMQ as the
//! broker (a vhost of the test's own on the test RabbitMQ), the results
//! still on Redis.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::django::{
    Clients, Database, DjangoProject, Server, Variant, free_port, http, migrate_before_herald,
    rows, text,
};
use crate::harness::{RedisServer, redis_conn};
use crate::rabbit::Vhost;

/// The broker a case runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Redis,
    RabbitMq,
}

/// Runs the case `$case(On)` once per broker, as `$case::redis` and
/// `$case::rabbitmq`.
macro_rules! on_both_brokers {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$case(super::On::Redis).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                super::$case(super::On::RabbitMq).await
            }
        }
    };
}

/// Celery's side of one test: its broker, result backend and queue.
struct Celery {
    redis: RedisServer,
    /// The broker when it is RabbitMQ.
    amqp: Option<Vhost>,
    /// A broker URL of the test's own (a private node) over both.
    url: Option<String>,
    queue: String,
}

impl Celery {
    fn new() -> Celery {
        Celery::on(On::Redis)
    }

    fn on(broker: On) -> Celery {
        Celery {
            redis: RedisServer::start(),
            amqp: (broker == On::RabbitMq).then(Vhost::new),
            url: None,
            queue: format!("herald-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }

    /// Celery on the broker at `url`, its results on a Redis of its own.
    fn at(url: String) -> Celery {
        Celery {
            url: Some(url),
            ..Celery::new()
        }
    }

    fn broker(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        match &self.amqp {
            Some(vhost) => vhost.url(),
            None => format!("{}/0", self.redis.url()),
        }
    }

    fn backend(&self) -> String {
        format!("{}/1", self.redis.url())
    }

    /// Celery's settings, for the application and herald alike.
    fn env(&self, command: &mut Command) {
        command
            .env("CELERY_BROKER_URL", self.broker())
            .env("CELERY_RESULT_BACKEND", self.backend())
            .env("INTEROP_CELERY_QUEUE", &self.queue)
            .env("HERALD_CELERY__QUEUES", format!("[\"{}\"]", self.queue));
    }

    /// `manage.py interop OP` with Celery configured.
    fn interop(&self, project: &DjangoProject, op: Value) -> Value {
        use std::io::Write;
        let mut command = project.python(&["manage.py", "interop", "-"]);
        self.env(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(op.to_string().as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "interop {} failed:\n{}",
            op["op"],
            text(&output.stderr)
        );
        let out = text(&output.stdout);
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("interop answered {out}"))
    }

    /// Makes the calls with the real celery package; their task ids.
    fn send(&self, project: &DjangoProject, calls: Vec<Value>) -> Vec<String> {
        self.send_in(project, 2, calls)
    }

    /// [`Celery::send`] in Celery's task protocol `protocol` (1 or 2).
    fn send_in(&self, project: &DjangoProject, protocol: u8, calls: Vec<Value>) -> Vec<String> {
        let op = json!({"op": "celery_send", "protocol": protocol, "calls": calls});
        let answer = self.interop(project, op);
        serde_json::from_value(answer["ids"].clone()).unwrap()
    }

    /// `AsyncResult(id).get(timeout=...)` for each id.
    fn results(&self, project: &DjangoProject, ids: &[String], timeout: u64) -> Vec<Value> {
        let op = json!({"op": "celery_results", "ids": ids, "timeout": timeout});
        serde_json::from_value(self.interop(project, op)).unwrap()
    }

    /// `herald run` on the project with Celery's broker and results.
    fn herald(&self, project: &DjangoProject, extra: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut command = project.herald(&["run"]);
        self.env(&mut command);
        command
            .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Server::wait(command.spawn().expect("herald starts"), port, "herald run")
    }

    /// `herald worker` and `herald sidecar` apart, as a deployment runs
    /// them: the worker with Celery's broker and results (its ingress on),
    /// the sidecar for the clients. The sidecar's port is the one answered.
    fn herald_apart(&self, project: &DjangoProject) -> (Server, Server) {
        let metrics = free_port();
        let mut worker = project.herald(&["worker"]);
        self.env(&mut worker);
        worker
            .env("HERALD_WORKER__LISTEN", format!("127.0.0.1:{metrics}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let worker = Server::wait(
            worker.spawn().expect("worker starts"),
            metrics,
            "herald worker",
        );
        let port = free_port();
        let mut sidecar = project.herald(&["sidecar"]);
        sidecar
            .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let sidecar = Server::wait(
            sidecar.spawn().expect("sidecar starts"),
            port,
            "herald sidecar",
        );
        (worker, sidecar)
    }

    async fn redis(&self, db: u8) -> redis::aio::MultiplexedConnection {
        redis_conn(&format!("{}/{db}", self.redis.url())).await
    }

    /// `celery worker` of the application on [`KEPT_QUEUE`] only, as the
    /// application's remaining workers run: prefork, two processes,
    /// prefetching 4 messages each. In a process group of its own, which
    /// [`Worker`]'s drop kills.
    fn worker(&self, project: &DjangoProject, name: &str) -> Worker {
        let mut command = project.python(&["-m", "celery", "-A", "celery_app", "worker"]);
        self.env(&mut command);
        command
            .args(["-Q", KEPT_QUEUE, "-P", "prefork", "-c", "2"])
            .args(["--prefetch-multiplier", "4", "-n", &format!("{name}@%h")])
            .args([
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ])
            .args(["-l", "warning"])
            .env("INTEROP_RUNS_URL", format!("{}/2", self.redis.url()))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Worker(command.spawn().expect("celery worker starts"))
    }

    /// [`REINDEX`]'s runs so far (by the Celery workers), by task id.
    async fn runs(&self) -> HashMap<String, i64> {
        redis::cmd("HGETALL")
            .arg("interop:runs")
            .query_async(&mut self.redis(2).await)
            .await
            .unwrap()
    }

    /// Messages of `queue` held in `unacked`: how long each has been held,
    /// in seconds (kombu's `unacked_index` scores).
    async fn held_on(&self, queue: &str) -> Vec<f64> {
        let mut conn = self.redis(0).await;
        let held: HashMap<String, String> = redis::cmd("HGETALL")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        let taken: HashMap<String, f64> = redis::cmd("ZRANGE")
            .arg("unacked_index")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        held.iter()
            .filter(|(_, value)| {
                let value: Value = serde_json::from_str(value).unwrap();
                value[2] == queue
            })
            .map(|(tag, _)| taken.get(tag).map_or(0.0, |at| now - at))
            .collect()
    }

    /// Watches [`KEPT_QUEUE`]'s side every 50 ms until `done(tasks run,
    /// messages held, messages waiting)`, each task run at most once
    /// throughout; `longest` keeps the longest hold seen. Fails if `worker`
    /// dies or `seconds` pass.
    async fn watch_kept(
        &self,
        worker: &mut Worker,
        longest: &mut f64,
        seconds: u64,
        done: impl Fn(usize, usize, usize) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let held = self.held_on(KEPT_QUEUE).await;
            *longest = held.iter().copied().fold(*longest, f64::max);
            let ran = once_each(&self.runs().await);
            let waiting = self.waiting(KEPT_QUEUE).await;
            if done(ran, held.len(), waiting) {
                return;
            }
            assert!(worker.0.try_wait().unwrap().is_none(), "celery worker died");
            assert!(
                started.elapsed() < Duration::from_secs(seconds),
                "the Celery worker ran {ran}, holds {}, {waiting} wait",
                held.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages waiting in `queue`'s list.
    async fn waiting(&self, queue: &str) -> usize {
        redis::cmd("LLEN")
            .arg(queue)
            .query_async(&mut self.redis(0).await)
            .await
            .unwrap()
    }

    /// Entries of kombu's `unacked` hash and `unacked_index` sorted set.
    async fn bookkeeping(&self) -> (usize, usize) {
        let mut conn = self.redis(0).await;
        let hash: usize = redis::cmd("HLEN")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        let index: usize = redis::cmd("ZCARD")
            .arg("unacked_index")
            .query_async(&mut conn)
            .await
            .unwrap();
        (hash, index)
    }

    /// Wave `wave` of `.delay()` calls: 20 of [`REINDEX`] for Celery, each
    /// followed by 7 or 8 of `notify` for herald (150). The task ids of
    /// Celery's calls, and herald's as (task id, title).
    fn interleaved(
        &self,
        project: &DjangoProject,
        user: i64,
        wave: usize,
    ) -> (Vec<String>, Vec<(String, String)>) {
        const KEPT: usize = 20;
        const OURS: usize = 150;
        let mut calls = Vec::new();
        let mut titles = Vec::new();
        for k in 0..KEPT {
            calls.push(delay(REINDEX, json!([WORK])));
            titles.push(None);
            for i in OURS * k / KEPT..OURS * (k + 1) / KEPT {
                let title = format!("w{wave}-{i}");
                calls.push(delay(NOTIFY, json!([user, title, "beside Celery"])));
                titles.push(Some(title));
            }
        }
        let ids = self.send(project, calls);
        let mut kept = Vec::new();
        let mut ours = Vec::new();
        for (id, title) in ids.into_iter().zip(titles) {
            match title {
                Some(title) => ours.push((id, title)),
                None => kept.push(id),
            }
        }
        (kept, ours)
    }

    /// Each of `ids` (`notify` calls of distinct titles) ran once: one job
    /// each and no other, one row each and no title twice, and a SUCCESS
    /// result each.
    async fn each_ran_once(&self, project: &DjangoProject, pool: &sqlx::PgPool, ids: &[String]) {
        let jobs = scalar(pool, "SELECT count(*) FROM herald_jobs").await;
        assert_eq!(jobs, ids.len() as i64, "one job per message");
        let stored = rows(project);
        assert_eq!(stored.len(), ids.len(), "one row per message");
        let mut titles: Vec<&str> = stored
            .values()
            .map(|r| r["title"].as_str().unwrap())
            .collect();
        titles.sort_unstable();
        titles.dedup();
        assert_eq!(titles.len(), ids.len(), "no message ran twice");
        let results = self.results(project, ids, 30);
        let succeeded = results.iter().filter(|r| r["status"] == "SUCCESS").count();
        assert_eq!(succeeded, ids.len(), "every result written");
    }

    /// Messages waiting in herald's queue, and held unacknowledged.
    async fn broker_counts(&self) -> (usize, usize) {
        if let Some(vhost) = &self.amqp {
            let (ready, unacked) = vhost.counts(&self.queue);
            return (ready as usize, unacked as usize);
        }
        let mut conn = self.redis(0).await;
        let waiting: usize = redis::cmd("LLEN")
            .arg(&self.queue)
            .query_async(&mut conn)
            .await
            .unwrap();
        let held: usize = redis::cmd("HLEN")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        (waiting, held)
    }
}

/// A Celery worker started by [`Celery::worker`]; dropped, its process
/// group is killed.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let group = format!("-{}", self.0.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.0.wait();
        }
    }
}

/// Sends signal `name` (`TERM`, `STOP`, ...) to process `pid`.
fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{name} {pid}");
}

/// How many tasks of `runs` (task id -> runs) ran, each once.
fn once_each(runs: &HashMap<String, i64>) -> usize {
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "ran more than once: {repeated:?}");
    runs.len()
}

/// `child`'s exit status, waiting up to `limit` for it.
async fn exited(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A project on a fresh PostgreSQL database, migrated by Django and herald,
/// with users `ada` and `bob` and one task (assigned to ada, created by bob).
pub(crate) async fn project_with_a_task() -> (DjangoProject, [i64; 2], i64) {
    crate::harness::init_tracing();
    let project = DjangoProject::new(Variant::BigAuto, Database::Postgres).await;
    migrate_before_herald(&project);
    let migrated = project.herald_migrate();
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    project.manage(&["migrate", "-v0", "notifications", "0002"]);
    let (ada, bob) = (101, 102);
    let setup = project.interop(json!({
        "op": "setup",
        "users": [{"id": ada, "username": "ada"}, {"id": bob, "username": "bob"}],
        "tasks": [{"title": "Report", "status": "todo", "assignee": ada, "created_by": bob}],
    }));
    (project, [ada, bob], setup["tasks"][0].as_i64().unwrap())
}

/// A store on the project's database, to read herald's ledger.
async fn ledger(project: &DjangoProject) -> sqlx::PgPool {
    sqlx::PgPool::connect(&project.url).await.unwrap()
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn call(task: &str, how: &str, args: Value, kwargs: Value, options: Value) -> Value {
    json!({"task": task, "how": how, "args": args, "kwargs": kwargs, "options": options})
}

fn delay(task: &str, args: Value) -> Value {
    call(task, "delay", args, json!({}), json!({}))
}

const NOTIFY: &str = "apps.notifications.tasks.notify";
const FILE_ATTACHED: &str = "apps.tasks.tasks.file_attached";
const STATUS_CHANGED: &str = "apps.tasks.tasks.status_changed";
/// The task the application keeps on its Celery workers, routed to
/// Celery's default queue, [`KEPT_QUEUE`].
const REINDEX: &str = "apps.tasks.tasks.reindex";
const KEPT_QUEUE: &str = "celery";
/// Seconds each [`REINDEX`] works: with two processes prefetching 4 each,
/// a message waits about 2 s in `unacked` before it starts.
const WORK: f64 = 0.5;

on_both_brokers!(celery_calls_run_on_herald_and_get_returns_or_raises);

/// `.delay()` and `apply_async()` of the three event tasks run on herald
/// and reach the application's consumer and herald's sidecar; `get()`
/// returns each job's result; a call herald must not run (arguments that
/// break the kind's schema, a task name it does not know, an expiry in the
/// past, a pickled body) raises what Celery would raise, and writes
/// nothing. A msgpack body runs like a JSON one.
async fn celery_calls_run_on_herald_and_get_returns_or_raises(broker: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;

    let ids = celery.send(
        &project,
        vec![
            delay(NOTIFY, json!([ada, "Welcome", "Your account is ready."])),
            delay(FILE_ATTACHED, json!([task, 501, "report.pdf", bob])),
            call(
                STATUS_CHANGED,
                "apply_async",
                json!([task, "todo", "review", ada]),
                json!({"reason": "ready"}),
                json!({}),
            ),
            // Wrong types for the kind's schema (Celery's client checks
            // only the number of arguments).
            delay(FILE_ATTACHED, json!(["not-a-task", 502, "x.pdf", bob])),
            // Too many arguments, by name (send_task skips the check).
            call(
                FILE_ATTACHED,
                "send_task",
                json!([task, 1, "f", bob, 9]),
                json!({}),
                json!({}),
            ),
            call(
                "apps.tasks.tasks.archive",
                "send_task",
                json!([task]),
                json!({}),
                json!({}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Expired", "never"]),
                json!({}),
                json!({"expires_in": -60}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Pickled", "never"]),
                json!({}),
                json!({"serializer": "pickle"}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([bob, "Packed", "as msgpack"]),
                json!({}),
                json!({"serializer": "msgpack"}),
            ),
        ],
    );
    let results = celery.results(&project, &ids, 30);
    let created_one = json!({"created": 1, "existing": 0});
    for (i, result) in results[..3].iter().enumerate() {
        assert_eq!(result["status"], "SUCCESS", "call {i}: {result}");
        assert_eq!(result["result"], created_one, "call {i}: {result}");
    }
    let raised = |i: usize| (results[i]["status"].clone(), results[i]["error"].clone());
    let (status, error) = raised(3);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("ValueError")),
        "{error}"
    );
    assert_eq!(error["module"], "builtins");
    assert!(
        error["args"][0].as_str().unwrap().contains("task_id"),
        "{error}"
    );
    let (status, error) = raised(4);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("TypeError")),
        "{error}"
    );
    assert!(
        error["args"][0]
            .as_str()
            .unwrap()
            .contains("takes 4 positional arguments but 5"),
        "{error}"
    );
    let (status, error) = raised(5);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("NotRegistered")),
        "{error}"
    );
    assert_eq!(error["module"], "celery.exceptions");
    let (status, error) = raised(6);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("REVOKED"), Some("TaskRevokedError")),
        "{error}"
    );
    let (status, error) = raised(7);
    assert_eq!(status, "FAILURE", "{error}");
    assert!(
        error["args"][0]
            .as_str()
            .unwrap()
            .contains("pickle is refused"),
        "{error}"
    );
    assert_eq!(
        results[8]["result"], created_one,
        "msgpack runs: {}",
        results[8]
    );

    // The four that ran, on both servers, as the application's rows.
    let ada_got = to_ada.receive(2).await;
    let mut bob_got = to_bob.receive(2).await;
    to_ada.silent().await;
    to_bob.silent().await;
    let mut titles: Vec<&str> = ada_got
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["File Attached", "Welcome"]);
    // receive() orders by id; the two went through different batches.
    bob_got.sort_by_key(|e| e["title"].as_str().map(str::to_string));
    assert_eq!(bob_got[0]["title"], "Packed");
    assert_eq!(bob_got[1]["title"], "Task Status Changed");
    assert!(
        bob_got[1]["message"]
            .as_str()
            .unwrap()
            .ends_with("Reason: ready")
    );
    let welcome = ada_got.iter().find(|e| e["title"] == "Welcome").unwrap();
    assert_eq!(
        welcome["notification_type"], "general",
        "the task's default"
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 4, "nothing of the refused calls: {stored:?}");

    // The job answers to its Celery id; the refused calls recorded none.
    let (status, job) = http(herald.port, "GET", &format!("/api/jobs/{}", ids[0]), "").await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("notify"), Some("done"))
    );
    assert_eq!(job["dedup_key"], format!("celery:{}", ids[0]));
    for id in &ids[3..8] {
        let (status, _) = http(herald.port, "GET", &format!("/api/jobs/{id}"), "").await;
        assert_eq!(status, 404, "call {id} recorded nothing");
    }
    assert_eq!(
        celery.broker_counts().await,
        (0, 0),
        "every message acknowledged"
    );
}

on_both_brokers!(a_countdown_waits_in_the_ledger_and_runs_once_on_time);

/// `apply_async(countdown=4)` runs at its time, not before and soon after;
/// the wait lives in herald's ledger: the message is acknowledged at once,
/// so a visibility timeout far shorter than the countdown sends nothing
/// back and the task runs once.
async fn a_countdown_waits_in_the_ledger_and_runs_once_on_time(broker: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let short = [
        ("HERALD_CELERY__VISIBILITY_TIMEOUT", "1s"),
        ("HERALD_CELERY__RESTORE_AFTER", "1s"),
    ];
    let herald = celery.herald(&project, &short);
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;
    let ids = celery.send(
        &project,
        vec![call(
            STATUS_CHANGED,
            "apply_async",
            json!([task, "todo", "done", ada]),
            json!({}),
            json!({"countdown": 4}),
        )],
    );
    // Recorded, acknowledged, waiting for its time in the ledger.
    let job = loop {
        let (status, job) = http(herald.port, "GET", &format!("/api/jobs/{}", ids[0]), "").await;
        if status == 200 {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "queued");
    assert_eq!(
        celery.broker_counts().await,
        (0, 0),
        "acknowledged before it runs"
    );
    // The ledger's run_at is the eta rounded up to its second.
    let run_at: chrono::DateTime<chrono::Utc> = job["run_at"].as_str().unwrap().parse().unwrap();
    let event = to_bob.receive(1).await;
    let arrived = chrono::Utc::now();
    assert!(
        arrived >= run_at,
        "ran at {arrived}, before its countdown ended at {run_at}"
    );
    let late = (arrived - run_at).to_std().unwrap();
    assert!(late < Duration::from_secs(3), "ran {late:?} after its time");
    assert_eq!(event[0]["title"], "Task Status Changed");
    // Past several visibility timeouts: nothing comes back, nothing runs twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    to_bob.silent().await;
    assert_eq!(rows(&project).len(), 1);
    let results = celery.results(&project, &ids, 10);
    assert_eq!(results[0]["status"], "SUCCESS", "{results:?}");
}

on_both_brokers!(three_hundred_delays_reach_the_django_consumer_once_each);

/// 300 `.delay()` calls at channels_redis's default capacity (100), which
/// daphne's consumer reads slower than herald publishes: each notification
/// reaches the application's consumer exactly once and herald's sidecar
/// (see [`crate::bursts::delivered`], also for order), and the table has
/// 300 rows.
async fn three_hundred_delays_reach_the_django_consumer_once_each(broker: On) {
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let calls = (0..300)
        .map(|i| delay(NOTIFY, json!([ada, format!("n{i}"), "from .delay()"])))
        .collect();
    let ids = celery.send(&project, calls);
    let arrivals = to_ada.arrivals(300).await;
    let rest = to_ada.rest().await;
    let seen = crate::bursts::delivered(&arrivals, &rest, 300);
    let held = crate::bursts::counter(herald.port, "herald_layer_held_total").await;
    eprintln!(
        "300 delays: {held} copies held; on the Django consumer {} after a higher id; \
         herald's sidecar {} resyncs, {} repeats",
        seen.descents,
        arrivals[0].resumed.len(),
        seen.sidecar_repeats
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 300);
    assert!(
        seen.django.iter().all(|id| stored.contains_key(id)),
        "every id a row"
    );
    let results = celery.results(&project, &ids, 30);
    assert!(
        results.iter().all(|r| r["status"] == "SUCCESS"),
        "{results:?}"
    );
}

on_both_brokers!(protocol_1_calls_run_on_herald_worker_and_reach_the_sidecar);

/// Messages in Celery's task protocol 1, as the real celery package writes
/// them with `task_protocol = 1` (the body a dict naming the task), taken
/// by `herald worker`'s ingress (not `herald run`'s), reach the application's
/// consumer and a client of `herald sidecar`, and `get()` returns.
async fn protocol_1_calls_run_on_herald_worker_and_reach_the_sidecar(broker: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let (_worker, sidecar) = celery.herald_apart(&project);
    let mut to_ada = Clients::open(sidecar.port, daphne.port, ada).await;
    let ids = celery.send_in(
        &project,
        1,
        vec![
            delay(NOTIFY, json!([ada, "Protocol one", "from a v1 body"])),
            call(
                FILE_ATTACHED,
                "apply_async",
                json!([task, 601]),
                json!({"file_name": "v1.pdf", "uploaded_by": bob}),
                json!({}),
            ),
        ],
    );
    let results = celery.results(&project, &ids, 30);
    let created_one = json!({"created": 1, "existing": 0});
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["status"], "SUCCESS", "call {i}: {result}");
        assert_eq!(result["result"], created_one, "call {i}: {result}");
    }
    let events = to_ada.receive(2).await;
    let titles: Vec<&str> = events.iter().filter_map(|e| e["title"].as_str()).collect();
    assert!(titles.contains(&"Protocol one"), "{events:?}");
    assert_eq!(
        events.len(),
        2,
        "the notify and the file for the assignee: {events:?}"
    );
    to_ada.silent().await;
    assert_eq!(rows(&project).len(), 2, "one row per call");
}

on_both_brokers!(kill_9_in_the_middle_of_5000_messages_loses_none_and_repeats_none);

/// kill -9 of herald in the middle of 5,000 messages, while it holds some
/// taken and not yet acknowledged (frozen with SIGSTOP until it does), then
/// a restart: what the dead process held goes back to the queue and every
/// message runs once (one row each, no repeats), with its result.
async fn kill_9_in_the_middle_of_5000_messages_loses_none_and_repeats_none(broker: On) {
    const MESSAGES: usize = 5000;
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let calls = (0..MESSAGES)
        .map(|i| delay(NOTIFY, json!([ada, format!("k{i}"), "once"])))
        .collect();
    let ids = celery.send(&project, calls);
    // Small rounds, so the kill finds some taken and not yet acknowledged.
    let knobs = [
        ("HERALD_CELERY__BATCH_SIZE", "20"),
        ("HERALD_CELERY__CONCURRENCY", "1"),
        ("HERALD_CELERY__RESTORE_AFTER", "2s"),
    ];
    let pool = ledger(&project).await;
    let mut first = celery.herald(&project, &knobs);
    let started = Instant::now();
    while scalar(&pool, "SELECT count(*) FROM herald_jobs").await < 500 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "herald took no messages"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Frozen, it holds what it held; killed only while that is some.
    let pid = first.child.id();
    let mut tries = 0;
    let held = loop {
        tries += 1;
        signal(pid, "STOP");
        // What it sent before it stopped reaches the broker meanwhile.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, held) = celery.broker_counts().await;
        if held > 0 {
            break held;
        }
        assert!(tries < 200, "herald never held a message when frozen");
        signal(pid, "CONT");
        tokio::time::sleep(Duration::from_millis(tries % 7)).await;
    };
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    // On Redis the held ones stay in `unacked` until the restore; on AMQP
    // the broker puts them back as the connection dies.
    let (waiting, _) = celery.broker_counts().await;
    eprintln!(
        "killed at freeze {tries} with {waiting} messages waiting and {held} held unacknowledged"
    );
    assert!(waiting > 0, "the kill came in the middle of the messages");
    let _second = celery.herald(&project, &knobs);
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == MESSAGES as i64 && celery.broker_counts().await == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{done} of {MESSAGES} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    celery.each_ran_once(&project, &pool, &ids).await;
}

/// A Celery worker sharing herald's broker (the same Redis DB, the same
/// `unacked` bookkeeping) on its own queue stays correct: the messages it
/// holds unacknowledged for seconds, past herald's `restore_after` (1 s,
/// a sweep every 0.5 s), are left to it, since herald puts back another
/// queue's messages only after the visibility timeout, so each of its
/// tasks runs once; its warm shutdown (SIGTERM) puts back exactly what it
/// held, to its own queue, and a second worker runs those. Herald runs
/// each of its 300 messages, sent between Celery's, once throughout. At the
/// end nothing is held and the queues are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celery_worker_sharing_the_broker_stays_correct() {
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::new();
    let mut herald = celery.herald(&project, &[("HERALD_CELERY__RESTORE_AFTER", "1s")]);
    let pool = ledger(&project).await;
    let mut first = celery.worker(&project, "first");
    let (mut kept, mut ours) = celery.interleaved(&project, ada, 1);
    // The longest a Celery message was seen held (herald's restore_after
    // is 1 s).
    let mut longest = 0.0_f64;
    celery
        .watch_kept(&mut first, &mut longest, 30, |ran, held, _| {
            ran >= 6 && held > 0
        })
        .await;

    // Warm shutdown of the Celery worker holding messages, while more of
    // both are sent.
    signal(first.0.id(), "TERM");
    let (more_kept, more_ours) = celery.interleaved(&project, ada, 2);
    kept.extend(more_kept);
    ours.extend(more_ours);
    let status = exited(&mut first.0, Duration::from_secs(30)).await;
    assert!(status.success(), "warm shutdown: {status}");
    assert!(
        celery.held_on(KEPT_QUEUE).await.is_empty(),
        "kombu put back what the worker held"
    );
    let ran: i64 = celery.runs().await.values().sum();
    let waiting = celery.waiting(KEPT_QUEUE).await;
    assert_eq!(
        ran as usize + waiting,
        kept.len(),
        "{ran} ran and {waiting} wait in Celery's queue"
    );
    eprintln!("the first Celery worker ran {ran}; {waiting} left to the second");
    assert!(herald.child.try_wait().unwrap().is_none(), "herald runs on");
    // Herald runs all of its messages, the Celery worker gone.
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == ours.len() as i64
            && celery.waiting(&celery.queue).await == 0
            && celery.held_on(&celery.queue).await.is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{done} of herald's {} done",
            ours.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second worker runs what the first put back and the second wave.
    let mut second = celery.worker(&project, "second");
    celery
        .watch_kept(&mut second, &mut longest, 40, |ran, held, waiting| {
            ran == kept.len() && held == 0 && waiting == 0
        })
        .await;
    signal(second.0.id(), "TERM");
    let status = exited(&mut second.0, Duration::from_secs(30)).await;
    assert!(status.success(), "warm shutdown: {status}");

    // Each of Celery's tasks ran once, on Celery.
    let runs = celery.runs().await;
    once_each(&runs);
    let mut ran: Vec<&String> = runs.keys().collect();
    ran.sort_unstable();
    let mut sent: Vec<&String> = kept.iter().collect();
    sent.sort_unstable();
    assert_eq!(ran, sent, "each of Celery's tasks ran");
    eprintln!("Celery's messages were held up to {longest:.2} s");
    assert!(
        longest > 1.5,
        "Celery held a message past herald's restore_after: {longest:.2} s at most"
    );
    // Each of herald's: one job, one row.
    let jobs: Vec<String> =
        sqlx::query_scalar("SELECT dedup_key FROM herald_jobs WHERE state = 'done'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut jobs: Vec<&str> = jobs
        .iter()
        .map(|key| key.trim_start_matches("celery:"))
        .collect();
    jobs.sort_unstable();
    let mut expected: Vec<&str> = ours.iter().map(|(id, _)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(jobs, expected, "one job per herald message, none else");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM herald_jobs").await, 300);
    let stored = rows(&project);
    let mut titles: Vec<&str> = stored
        .values()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    let mut expected: Vec<&str> = ours.iter().map(|(_, title)| title.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(titles, expected, "one row per herald message");
    let ids: Vec<String> = kept
        .iter()
        .cloned()
        .chain(ours.iter().map(|(id, _)| id.clone()))
        .collect();
    let results = celery.results(&project, &ids, 30);
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r["status"] != "SUCCESS")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(celery.bookkeeping().await, (0, 0), "nothing held");
    assert_eq!(celery.waiting(KEPT_QUEUE).await, 0);
    assert_eq!(celery.waiting(&celery.queue).await, 0);
}

on_both_brokers!(celery_beat_runs_overdue_check_once_per_period);

/// `celery beat` sending overdue_check every second lands in herald, and
/// with herald's own scheduler on (every 4 s) the scan runs once per
/// period: the first message of a period claims it (or herald's tick did),
/// the others get a SUCCESS naming who ran it, and record nothing.
async fn celery_beat_runs_overdue_check_once_per_period(broker: On) {
    let (project, [ada, _], _) = project_with_a_task().await;
    let late = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
    project.interop(
        json!({"op": "setup", "tasks": [{"title": "Late", "status": "todo",
        "deadline": late, "assignee": ada}]}),
    );
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let herald = celery.herald(
        &project,
        &[("HERALD_WORKER__OVERDUE_SCHEDULE", "*/4 * * * * *")],
    );
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let schedule = project.dir.path().join("beat-schedule");
    let mut command = project.python(&[
        "-m",
        "celery",
        "-A",
        "celery_app",
        "beat",
        "--max-interval",
        "1",
    ]);
    celery.env(&mut command);
    let mut beat = command
        .arg("-s")
        .arg(&schedule)
        .args(["-l", "warning"])
        .env("INTEROP_BEAT_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("celery beat starts");
    let overdue = to_ada.receive(1).await;
    assert_eq!(overdue[0]["title"], "Task Overdue");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = beat.kill();
    let _ = beat.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    to_ada.silent().await;

    let pool = ledger(&project).await;
    let periods: Vec<(String,)> =
        sqlx::query_as("SELECT claimed_by FROM herald_schedule_runs WHERE name = 'overdue_check'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_beat = periods
        .iter()
        .filter(|(by,)| by.starts_with("celery:"))
        .count();
    let jobs = scalar(
        &pool,
        "SELECT count(*) FROM herald_jobs WHERE kind = 'overdue_check' AND dedup_key LIKE 'celery:%'",
    )
    .await;
    assert!(
        by_beat >= 1,
        "beat's messages ran some periods: {periods:?}"
    );
    assert_eq!(
        jobs, by_beat as i64,
        "one scan job per period a beat message claimed"
    );
    // Every beat message has its result; those beyond one per period say
    // who ran their period.
    let mut conn = celery.redis(1).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("celery-task-meta-*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut skipped = 0;
    for key in &keys {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let meta: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
        if meta["result"]["skipped"] == true {
            skipped += 1;
        }
    }
    assert!(
        keys.len() >= 6,
        "beat sent about one message a second: {}",
        keys.len()
    );
    assert_eq!(
        keys.len(),
        by_beat + skipped,
        "each message ran its period or was skipped"
    );
    assert!(
        skipped >= keys.len() / 2,
        "several messages per period: {skipped} of {}",
        keys.len()
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 1, "one overdue notice: {stored:?}");
}

/// RabbitMQ's `consumer_timeout` (celery#6760, #6954) on a private node
/// with a 5 s timeout, checked every second: a countdown of 30 s sent to
/// the Celery worker's queue is held unacknowledged in its memory until the
/// node closes its channel with PRECONDITION_FAILED; the same countdown
/// sent to herald's queue is in herald's ledger, acknowledged at once, and
/// runs once at its time, herald's connection never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_past_rabbitmqs_consumer_timeout_runs_on_herald_and_breaks_celery() {
    const COUNTDOWN: i64 = 30;
    let node = crate::rabbit::RabbitNode::start(
        "consumer_timeout = 5000",
        "{channel_tick_interval, 1000}",
    );
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::at(node.url());
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let _worker = celery.worker(&project, "timeout");
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;
    let sent = chrono::Utc::now();
    let ids = celery.send(
        &project,
        vec![
            call(
                STATUS_CHANGED,
                "apply_async",
                json!([task, "todo", "done", ada]),
                json!({}),
                json!({"countdown": COUNTDOWN}),
            ),
            call(
                REINDEX,
                "apply_async",
                json!([WORK]),
                json!({}),
                json!({"countdown": COUNTDOWN}),
            ),
        ],
    );
    // Celery's worker loses its channel while it holds the countdown.
    let started = Instant::now();
    while !node.log().contains("timed out") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the node never timed out the Celery worker's delivery:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the node closed the Celery worker's channel after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Herald's runs at its time, once.
    let event = to_bob.receive(1).await;
    let ran = chrono::Utc::now();
    assert_eq!(event[0]["title"], "Task Status Changed");
    assert!(
        ran >= sent + chrono::TimeDelta::seconds(COUNTDOWN),
        "ran at {ran}, before its countdown from {sent}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    to_bob.silent().await;
    assert_eq!(rows(&project).len(), 1, "ran once");
    let results = celery.results(&project, &ids[..1], 10);
    assert_eq!(results[0]["status"], "SUCCESS", "{results:?}");
    let reconnects =
        crate::bursts::counter(herald.port, "herald_celery_broker_reconnects_total").await;
    assert_eq!(reconnects, 0.0, "herald's connection was never closed");
    let timeouts = node
        .log()
        .lines()
        .filter(|line| line.contains("timed out"))
        .count();
    eprintln!("consumer timeouts in the node's log (the Celery worker's): {timeouts}");
}

/// Faults of the AMQP broker in the middle of 3,000 messages taken one at
/// a time (so the faults find most of them still to take), on a private
/// node: every connection cut (`rabbitmqctl close_all_connections`), then
/// the node restarted (`rabbitmqctl stop` and a start on the same data).
/// Herald connects again each time (its reconnect counter says so), and
/// every message runs once (one job, one row, no title twice) with its
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_and_a_rabbitmq_restart_lose_nothing_and_repeat_nothing() {
    const MESSAGES: usize = 3000;
    let mut node = crate::rabbit::RabbitNode::start("", "");
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::at(node.url());
    let calls = (0..MESSAGES)
        .map(|i| delay(NOTIFY, json!([ada, format!("r{i}"), "once"])))
        .collect();
    let ids = celery.send(&project, calls);
    let knobs = [
        ("HERALD_CELERY__BATCH_SIZE", "1"),
        ("HERALD_CELERY__CONCURRENCY", "1"),
    ];
    let pool = ledger(&project).await;
    let herald = celery.herald(&project, &knobs);
    let jobs_reach = |n: i64| {
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            while scalar(&pool, "SELECT count(*) FROM herald_jobs").await < n {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "fewer than {n} jobs"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    jobs_reach(300).await;
    node.ctl(&["close_all_connections", "herald test: connection cut"]);
    let cut_at = scalar(&pool, "SELECT count(*) FROM herald_jobs").await;
    jobs_reach(cut_at + 300).await;
    node.restart();
    let restarted_at = scalar(&pool, "SELECT count(*) FROM herald_jobs").await;
    eprintln!("cut at {cut_at} jobs, restarted at {restarted_at} of {MESSAGES}");
    assert!(
        restarted_at < MESSAGES as i64,
        "the restart came in the middle of the messages"
    );
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == MESSAGES as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{done} of {MESSAGES} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reconnects =
        crate::bursts::counter(herald.port, "herald_celery_broker_reconnects_total").await;
    assert!(
        reconnects >= 2.0,
        "herald connected again after each fault: {reconnects}"
    );
    celery.each_ran_once(&project, &pool, &ids).await;
}
