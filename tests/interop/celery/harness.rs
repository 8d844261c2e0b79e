//! Celery's side of one test: the broker (a redis-server of the test's own,
//! or a vhost on the test RabbitMQ, or a private node's URL), the result
//! backend, the queue herald consumes, and the real celery package's calls,
//! results and worker; plus the project every case starts from.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::django::{
    Database, DjangoProject, Server, Variant, free_port, migrate_before_herald, text,
};
use crate::harness::RedisServer;
use crate::rabbit::Vhost;

use super::On;

/// Celery's side of one test: its broker, result backend and queue.
pub(super) struct Celery {
    pub(super) redis: RedisServer,
    /// The broker when it is RabbitMQ.
    pub(super) amqp: Option<Vhost>,
    /// A broker URL of the test's own (a private node) over both.
    pub(super) url: Option<String>,
    pub(super) queue: String,
    /// The result backend when it is not the test's Redis (`rpc://`).
    pub(super) results: Option<String>,
    /// More of Celery's settings, for the application and herald alike.
    pub(super) settings: Vec<(&'static str, &'static str)>,
}

impl Celery {
    pub(super) fn new() -> Celery {
        Celery::on(On::Redis)
    }

    pub(super) fn on(broker: On) -> Celery {
        Celery {
            redis: RedisServer::start(),
            amqp: (broker == On::RabbitMq).then(Vhost::new),
            url: None,
            queue: format!("herald-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            results: None,
            settings: Vec::new(),
        }
    }

    /// Celery on the broker at `url`, its results on a Redis of its own.
    pub(super) fn at(url: String) -> Celery {
        Celery {
            url: Some(url),
            ..Celery::new()
        }
    }

    pub(super) fn broker(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        match &self.amqp {
            Some(vhost) => vhost.url(),
            None => format!("{}/0", self.redis.url()),
        }
    }

    /// Celery with its results on the rpc:// backend: messages on the
    /// broker, nothing else.
    pub(super) fn rpc(self) -> Celery {
        Celery {
            results: Some("rpc://".into()),
            ..self
        }
    }

    /// Celery with `name` (one of Celery's `CELERY_*` settings) set to
    /// `value` in the application's settings and herald's environment.
    pub(super) fn with(mut self, name: &'static str, value: &'static str) -> Celery {
        self.settings.push((name, value));
        self
    }

    pub(super) fn backend(&self) -> String {
        match &self.results {
            Some(url) => url.clone(),
            None => format!("{}/1", self.redis.url()),
        }
    }

    /// Makes the calls and waits, in the same process, up to `timeout`
    /// seconds for each result (rpc:// answers only the caller): the task
    /// ids and what each `get()` returned or raised.
    pub(super) fn send_and_get(
        &self,
        project: &DjangoProject,
        calls: Vec<Value>,
        timeout: u64,
    ) -> (Vec<String>, Vec<Value>) {
        let op = json!({"op": "celery_send", "calls": calls, "get": timeout});
        let answer = self.interop(project, op);
        let ids = serde_json::from_value(answer["ids"].clone()).unwrap();
        (
            ids,
            serde_json::from_value(answer["results"].clone()).unwrap(),
        )
    }

    /// Celery's settings, for the application and herald alike.
    pub(super) fn env(&self, command: &mut Command) {
        command
            .env("CELERY_BROKER_URL", self.broker())
            .env("CELERY_RESULT_BACKEND", self.backend())
            .env("INTEROP_CELERY_QUEUE", &self.queue)
            .env("HERALD_CELERY__QUEUES", format!("[\"{}\"]", self.queue))
            .envs(self.settings.iter().copied());
    }

    /// `manage.py interop OP` with Celery configured.
    pub(super) fn interop(&self, project: &DjangoProject, op: Value) -> Value {
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
    pub(super) fn send(&self, project: &DjangoProject, calls: Vec<Value>) -> Vec<String> {
        self.send_in(project, 2, calls)
    }

    /// [`Celery::send`] in Celery's task protocol `protocol` (1 or 2).
    pub(super) fn send_in(
        &self,
        project: &DjangoProject,
        protocol: u8,
        calls: Vec<Value>,
    ) -> Vec<String> {
        let op = json!({"op": "celery_send", "protocol": protocol, "calls": calls});
        let answer = self.interop(project, op);
        serde_json::from_value(answer["ids"].clone()).unwrap()
    }

    /// `AsyncResult(id).get(timeout=...)` for each id.
    pub(super) fn results(
        &self,
        project: &DjangoProject,
        ids: &[String],
        timeout: u64,
    ) -> Vec<Value> {
        let op = json!({"op": "celery_results", "ids": ids, "timeout": timeout});
        serde_json::from_value(self.interop(project, op)).unwrap()
    }

    /// `herald run` on the project with Celery's broker and results.
    pub(super) fn herald(&self, project: &DjangoProject, extra: &[(&str, &str)]) -> Server {
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
    pub(super) fn herald_apart(&self, project: &DjangoProject) -> (Server, Server) {
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
}

/// `/api/stats`'s `broker` once `ready(broker)` holds (the heartbeats and
/// the dashboard's read come every second); fails after 20 s.
pub(super) async fn broker_stats(port: u16, ready: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, stats) = crate::django::http(port, "GET", "/api/stats", "").await;
        assert_eq!(status, 200, "{stats}");
        if ready(&stats["broker"]) {
            return stats["broker"].clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the broker's stats never settled: {}",
            stats["broker"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
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
pub(super) async fn ledger(project: &DjangoProject) -> sqlx::PgPool {
    sqlx::PgPool::connect(&project.url).await.unwrap()
}

pub(super) async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub(super) fn call(task: &str, how: &str, args: Value, kwargs: Value, options: Value) -> Value {
    json!({"task": task, "how": how, "args": args, "kwargs": kwargs, "options": options})
}

pub(super) fn delay(task: &str, args: Value) -> Value {
    call(task, "delay", args, json!({}), json!({}))
}

pub(super) const NOTIFY: &str = "apps.notifications.tasks.notify";
pub(super) const FILE_ATTACHED: &str = "apps.tasks.tasks.file_attached";
pub(super) const STATUS_CHANGED: &str = "apps.tasks.tasks.status_changed";
/// The task the application keeps on its Celery workers, routed to
/// Celery's default queue, [`KEPT_QUEUE`].
pub(super) const REINDEX: &str = "apps.tasks.tasks.reindex";
pub(super) const KEPT_QUEUE: &str = "celery";
/// Seconds each [`REINDEX`] works: with two processes prefetching 4 each,
/// a message waits about 2 s in `unacked` before it starts.
pub(super) const WORK: f64 = 0.5;
