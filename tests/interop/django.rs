//! Herald on the database a real Django project made: the contract's models
//! with their own migrations (tests/interop/django_app), in the three id
//! layouts real projects have (4-byte ids everywhere; 8-byte notification
//! and task ids beside the default user's 4-byte ones; a custom 8-byte
//! user), on PostgreSQL and SQLite. Django's `migrate` makes the schema,
//! `herald migrate` adds what herald needs, and every job kind reaches the
//! application's own NotificationConsumer (daphne) and herald's sidecar.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{LayerConfig, SHARED_REDIS, python};

const SECRET: &str = "interop-django-secret-not-for-any-deployment";

/// The job API's key of the herald processes these tests run.
const API_KEY: &str = "interop-api-key-not-for-any-deployment";

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/django_app")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port}");
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The id layouts of real projects (settings.py, INTEROP_ID_VARIANT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// DEFAULT_AUTO_FIELD AutoField and the default auth.User.
    Auto,
    /// DEFAULT_AUTO_FIELD BigAutoField and the default auth.User.
    BigAuto,
    /// A custom user model with BigAutoField.
    CustomUser,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Auto => "auto",
            Variant::BigAuto => "bigauto",
            Variant::CustomUser => "custom_user",
        }
    }

    /// User ids near the top of the user id column's width.
    fn first_user_id(self) -> i64 {
        match self {
            Variant::CustomUser => (1 << 53) + 1,
            _ => i64::from(i32::MAX) - 10,
        }
    }

    /// Where the notification id sequence starts: near 2^31 for 4-byte ids,
    /// past 2^53 (where a double loses integers) for 8-byte ones.
    fn first_notification_id(self, database: Database) -> i64 {
        match (self, database) {
            (Variant::Auto, Database::Postgres) => i64::from(i32::MAX) - 1000,
            _ => (1 << 53) + 11,
        }
    }

    /// Where the task id sequence starts: the three tasks take the last
    /// ids a 4-byte column holds (up to 2^31 - 1), or ids past 2^53 in an
    /// 8-byte one (2^53 + 21 and + 23 are no double's value).
    fn first_task_id(self, database: Database) -> i64 {
        match (self, database) {
            (Variant::Auto, Database::Postgres) => i64::from(i32::MAX) - 2,
            _ => (1 << 53) + 21,
        }
    }

    fn user_table(self) -> &'static str {
        match self {
            Variant::CustomUser => "accounts_user",
            _ => "auth_user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Database {
    Postgres,
    Sqlite,
}

/// A Django project on a fresh database of its own.
pub(crate) struct DjangoProject {
    variant: Variant,
    database: Database,
    pub(crate) url: String,
    layer: LayerConfig,
    pub(crate) dir: tempfile::TempDir,
}

impl DjangoProject {
    pub(crate) async fn new(variant: Variant, database: Database) -> DjangoProject {
        let dir = tempfile::tempdir().unwrap();
        let url = match database {
            Database::Sqlite => format!("sqlite://{}", dir.path().join("app.sqlite3").display()),
            Database::Postgres => crate::harness::fresh_postgres_database().await,
        };
        DjangoProject {
            variant,
            database,
            url,
            layer: LayerConfig::fresh(),
            dir,
        }
    }

    /// Django's URL form of the database (sqlite:///ABSOLUTE/PATH).
    fn django_url(&self) -> String {
        match self.database {
            Database::Sqlite => self.url.replacen("sqlite://", "sqlite:///", 1),
            Database::Postgres => self.url.clone(),
        }
    }

    pub(crate) fn python(&self, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .args(args)
            .current_dir(app_dir())
            .env("PYTHONPATH", app_dir())
            .env("DJANGO_SETTINGS_MODULE", "settings")
            .env("INTEROP_SECRET_KEY", SECRET)
            .env("INTEROP_DATABASE", self.django_url())
            .env("INTEROP_ID_VARIANT", self.variant.name())
            .env("INTEROP_REDIS_URL", &self.layer.hosts[0])
            .env("INTEROP_PREFIX", &self.layer.prefix);
        command
    }

    /// `manage.py ARGS`, which must succeed.
    pub(crate) fn manage(&self, args: &[&str]) -> String {
        let output = self.try_manage(args);
        assert!(
            output.status.success(),
            "manage.py {args:?} failed:\n{}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn try_manage(&self, args: &[&str]) -> Output {
        let mut all = vec!["manage.py"];
        all.extend(args);
        self.python(&all).output().expect("python runs")
    }

    /// One `manage.py interop` operation through the application's ORM.
    pub(crate) fn interop(&self, op: Value) -> Value {
        let out = self.manage(&["interop", &op.to_string()]);
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("interop answered {out}"))
    }

    /// daphne serving the application's consumer.
    pub(crate) fn daphne(&self) -> Server {
        let port = free_port();
        let child = self
            .python(&["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
            .arg("asgi:application")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("daphne starts");
        Server::wait(child, port, "daphne")
    }

    /// `herald ARGS` on the project's database, Redis and secret.
    pub(crate) fn herald(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(args)
            .env_remove("REDIS_URL")
            .env("DATABASE_URL", &self.url)
            .env("SECRET_KEY", SECRET)
            .env("HERALD_DATA_DIR", self.dir.path().join("herald-data"))
            .env("HERALD_LAYER__BACKEND", "redis")
            .env("REDIS_URL", SHARED_REDIS)
            .env("HERALD_LAYER__PREFIX", &self.layer.prefix)
            .env("HERALD_SIDECAR__USER_TABLE", self.variant.user_table())
            .env("HERALD_API__KEY", API_KEY);
        if self.database == Database::Postgres {
            command.env("HERALD_QUEUE__BACKEND", "redis").env(
                "HERALD_QUEUE__PREFIX",
                format!("herald-t-{}", self.layer.prefix),
            );
        }
        command
    }

    pub(crate) fn herald_migrate(&self) -> Output {
        self.herald(&["migrate"]).output().expect("herald runs")
    }

    /// `herald run` on the project's database.
    /// `herald run` on a free port. Its own scans are scheduled for 1
    /// January only, so a test that submits its scans as jobs gets their
    /// notifications in the order it submitted them: a scan herald ran on
    /// its own at a minute's turn came first once (a clean-clone CI run).
    pub(crate) fn herald_run(&self) -> Server {
        let port = free_port();
        let child = self
            .herald(&["run"])
            .env("HERALD_SIDECAR__LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_WORKER__OVERDUE_SCHEDULE", "0 0 0 1 1 *")
            .env("HERALD_WORKER__DEADLINE_REMINDER_SCHEDULE", "0 0 0 1 1 *")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("herald starts");
        Server::wait(child, port, "herald run")
    }

    /// The database type of each column of `table`, as Django sees it.
    fn columns(&self, table: &str) -> BTreeMap<String, String> {
        let answer = self.interop(json!({"op": "columns", "table": table}));
        serde_json::from_value(answer).unwrap()
    }
}

/// A child process listening on `port`, killed on drop.
pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) child: Child,
}

impl Server {
    pub(crate) fn wait(mut child: Child, port: u16, what: &str) -> Server {
        wait_for_port(port, &mut child, what);
        Server { port, child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser-like client: the token as the subprotocol.
async fn open(port: u16, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://127.0.0.1:{port}/ws/notifications/")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(token).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let echoed = response.headers().get("sec-websocket-protocol");
    assert_eq!(echoed.and_then(|v| v.to_str().ok()), Some(token));
    Ok(socket)
}

fn token(user_id: i64) -> String {
    herald::tokens::mint(
        &SecretString::from(SECRET),
        user_id,
        Duration::from_secs(600),
    )
    .unwrap()
}

/// The next JSON event, or None when the socket closes or stays silent.
async fn next_event(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .ok()??
            .ok()?;
        match frame {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Herald's sidecar completes the handshake, then closes with 4001 and the
/// reason; the application's consumer refuses the handshake itself.
async fn refused_by_both(herald: u16, daphne: u16, user_id: i64, reason: &str) {
    let mut socket = open(herald, &token(user_id)).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame for user {user_id}, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4001, reason)
    );
    assert!(
        open(daphne, &token(user_id)).await.is_err(),
        "the application's consumer refuses user {user_id} too"
    );
}

/// A WebSocket on each server for one user.
pub(crate) struct Clients {
    herald: Socket,
    django: Socket,
}

impl Clients {
    pub(crate) async fn open(herald: u16, daphne: u16, user_id: i64) -> Clients {
        let mut clients = Clients {
            herald: open(herald, &token(user_id)).await.unwrap(),
            django: open(daphne, &token(user_id)).await.unwrap(),
        };
        // Herald's answer to a ping says its socket joined the group.
        clients
            .herald
            .send(Message::text(json!({"type": "ping"}).to_string()))
            .await
            .unwrap();
        let pong = next_event(&mut clients.herald, Duration::from_secs(10)).await;
        assert_eq!(pong.unwrap()["type"], "pong");
        clients
    }

    /// `count` notifications on each socket; both must see the same ones.
    pub(crate) async fn receive(&mut self, count: usize) -> Vec<Value> {
        let [herald, django] = self.arrivals(count).await;
        for arrived in [&herald, &django] {
            assert_eq!(arrived.resumed, Vec::<Value>::new(), "no resync");
        }
        let [mut herald, mut django] = [herald.events, django.events];
        herald.sort_by_key(|data| data["id"].as_i64());
        django.sort_by_key(|data| data["id"].as_i64());
        assert_eq!(herald, django, "herald's sidecar and the Django consumer");
        herald
    }

    /// `count` notifications on each socket, both read at once, in the
    /// order each arrived: herald's sidecar's, then the Django consumer's.
    pub(crate) async fn arrivals(&mut self, count: usize) -> [Arrived; 2] {
        let (herald, django) = tokio::join!(
            arrive(&mut self.herald, count, "herald's sidecar"),
            arrive(&mut self.django, count, "the Django consumer")
        );
        [herald, django]
    }
    /// Everything more each socket gets until it stays silent for a second:
    /// herald's sidecar's, then the Django consumer's.
    pub(crate) async fn rest(&mut self) -> [Vec<Value>; 2] {
        let mut rest = [Vec::new(), Vec::new()];
        for (socket, rest) in [&mut self.herald, &mut self.django]
            .into_iter()
            .zip(&mut rest)
        {
            while let Some(event) = next_event(socket, Duration::from_secs(1)).await {
                rest.push(event);
            }
        }
        rest
    }

    /// Nothing more arrives on either socket for a moment.
    pub(crate) async fn silent(&mut self) {
        for socket in [&mut self.herald, &mut self.django] {
            let extra = next_event(socket, Duration::from_millis(500)).await;
            assert_eq!(extra, None, "an unexpected event");
        }
    }
}

/// What one socket received: the notifications' data in arrival order, the
/// `resumed` events of the sidecar's resyncs among them, and when the last
/// notification came.
pub(crate) struct Arrived {
    pub(crate) events: Vec<Value>,
    pub(crate) resumed: Vec<Value>,
    pub(crate) last: Instant,
}

/// Reads `socket` until `count` different notifications came, each within
/// 20 s of the one before; a repeated id is kept (the caller judges it).
async fn arrive(socket: &mut Socket, count: usize, what: &str) -> Arrived {
    let mut events = Vec::with_capacity(count);
    let mut resumed = Vec::new();
    let mut ids = std::collections::HashSet::new();
    while ids.len() < count {
        let event = next_event(socket, Duration::from_secs(20)).await;
        let event = event.unwrap_or_else(|| panic!("{what}: {} of {count} events", ids.len()));
        match event["type"].as_str() {
            Some("notification") => {
                ids.insert(event["data"]["id"].to_string());
                events.push(event["data"].clone());
            }
            Some("resumed") => resumed.push(event["data"].clone()),
            _ => panic!("{what}: {event}"),
        }
    }
    Arrived {
        events,
        resumed,
        last: Instant::now(),
    }
}

/// `POST /api/jobs` on herald, with its key; answers the job id.
async fn submit(port: u16, kind: &str, payload: Value) -> String {
    let body = json!({"kind": kind, "payload": payload}).to_string();
    let (status, answer) = http(port, "POST", "/api/jobs", &body).await;
    assert_eq!(status, 202, "{kind}: {answer}");
    answer["id"].as_str().unwrap().to_string()
}

/// A minimal HTTP/1.1 request over a fresh connection; the body as JSON
/// (null if it is not).
pub(crate) async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http_text(port, method, path, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// [`http`] answering the body as text.
pub(crate) async fn http_text(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = text(&response);
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Waits until the job is done, failing on dead.
async fn done(port: u16, id: &str) -> Value {
    for _ in 0..200 {
        let (_, job) = http(port, "GET", &format!("/api/jobs/{id}"), "").await;
        match job["state"].as_str() {
            Some("done") => return job,
            Some("dead") => panic!("job {id} died: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("job {id} did not finish");
}

/// Waits until the job is dead, failing if it is done.
async fn dead(port: u16, id: &str) -> Value {
    for _ in 0..200 {
        let (_, job) = http(port, "GET", &format!("/api/jobs/{id}"), "").await;
        match job["state"].as_str() {
            Some("dead") => return job,
            Some("done") => panic!("job {id} succeeded: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("job {id} did not end");
}

/// The application's rows, by id.
pub(crate) fn rows(project: &DjangoProject) -> BTreeMap<i64, Value> {
    let rows = project.interop(json!({"op": "notifications"}));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| (row["id"].as_i64().unwrap(), row.clone()))
        .collect()
}

/// Each delivered payload is the row the application's ORM reads.
pub(crate) fn matches_rows(events: &[Value], rows: &BTreeMap<i64, Value>, user_id: i64) {
    for event in events {
        let id = event["id"].as_i64().expect("an integer id");
        let row = rows.get(&id).unwrap_or_else(|| panic!("no row {id}"));
        assert_eq!(row["user_id"].as_i64(), Some(user_id), "{row}");
        assert_eq!(row["title"], event["title"]);
        assert_eq!(row["message"], event["message"]);
        assert_eq!(row["type"], event["notification_type"]);
        assert_eq!(row["is_read"], event["is_read"]);
    }
}

pub(crate) fn titles(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect()
}

/// Django's migrate up to the application's state before herald: on
/// PostgreSQL without herald's dedup key (herald adds it), on SQLite with the
/// documented migration 0002 (required there).
pub(crate) fn migrate_before_herald(project: &DjangoProject) {
    let notifications = match project.database {
        Database::Postgres => "0001",
        Database::Sqlite => "0002",
    };
    let mut apps = vec!["contenttypes", "auth", "tasks"];
    if project.variant == Variant::CustomUser {
        apps.push("accounts");
    }
    for app in apps {
        project.manage(&["migrate", "-v0", app]);
    }
    project.manage(&["migrate", "-v0", "notifications", notifications]);
}

/// The whole path on one project: schema by Django, `herald migrate`, users
/// and tasks by the ORM, then every job kind and both scans delivered to
/// both servers; rows side by side with the application's own; a Django
/// migration applied while herald runs.
async fn every_kind_on_a_django_database(variant: Variant, database: Database) {
    crate::harness::init_tracing();
    let project = DjangoProject::new(variant, database).await;
    migrate_before_herald(&project);
    let migrated = project.herald_migrate();
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    // Django's later migrate still works on what herald added.
    project.manage(&["migrate", "-v0", "notifications", "0002"]);
    let (id_type, user_type) = match (database, variant) {
        (Database::Sqlite, Variant::CustomUser) => ("integer", "bigint"),
        (Database::Sqlite, _) => ("integer", "integer"),
        (Database::Postgres, Variant::Auto) => ("integer", "integer"),
        (Database::Postgres, Variant::BigAuto) => ("bigint", "integer"),
        (Database::Postgres, Variant::CustomUser) => ("bigint", "bigint"),
    };
    let columns = project.columns("notifications_notification");
    let type_of = |name: &str| columns[name].to_ascii_lowercase();
    assert_eq!(type_of("id"), id_type, "{columns:?}");
    assert_eq!(type_of("user_id"), user_type, "{columns:?}");

    let [a, b, inactive, missing] = [0, 1, 2, 3].map(|i| variant.first_user_id() + i);
    let deadline = |hours: i64| (chrono::Utc::now() + chrono::TimeDelta::hours(hours)).to_rfc3339();
    let first_id = variant.first_notification_id(database);
    let first_task = variant.first_task_id(database);
    let setup = project.interop(json!({
        "op": "setup",
        "users": [
            {"id": a, "username": "ada"},
            {"id": b, "username": "bob"},
            {"id": inactive, "username": "ina", "is_active": false},
        ],
        "tasks": [
            {"title": "Late report", "status": "todo", "deadline": deadline(-2),
             "assignee": a, "created_by": b},
            {"title": "Due soon", "status": "in_progress", "deadline": deadline(1) ,
             "assignee": b, "created_by": a},
            {"title": "Done task", "status": "done", "deadline": deadline(-5),
             "assignee": a, "created_by": b},
        ],
        "next_task_id": first_task,
        "next_notification_id": first_id,
    }));
    let tasks: Vec<i64> = serde_json::from_value(setup["tasks"].clone()).unwrap();
    assert_eq!(tasks, [first_task, first_task + 1, first_task + 2]);
    let task_columns = project.columns("tasks_task");
    assert_eq!(
        task_columns["id"].to_ascii_lowercase(),
        id_type,
        "{task_columns:?}"
    );

    let daphne = project.daphne();
    let herald = project.herald_run();
    refused_by_both(herald.port, daphne.port, inactive, "user_inactive").await;
    refused_by_both(herald.port, daphne.port, missing, "user_not_found").await;
    let mut ada = Clients::open(herald.port, daphne.port, a).await;
    let mut bob = Clients::open(herald.port, daphne.port, b).await;

    // The application's own path first: its row takes the first id.
    let app = project.interop(json!({"op": "notify", "user": a, "title": "Welcome",
        "message": "Hello from Django", "type": "general", "data": {"n": 1},
        "dedup_key": "welcome"}));
    assert_eq!(app["id"].as_i64(), Some(first_id));
    let events = ada.receive(1).await;
    assert_eq!(events[0]["id"].as_i64(), Some(first_id));

    // Every kind through herald. The notify repeats the application's dedup
    // key: one dedup rule, so it makes no second row.
    let jobs = [
        (
            "notify",
            json!({"user_id": a, "title": "Welcome", "message": "again",
            "notification_type": "general", "dedup_key": "welcome"}),
        ),
        (
            "notify",
            json!({"user_id": b, "title": "Hi Bob", "message": "from herald",
            "notification_type": "general", "data": {"url": "/tasks/"}}),
        ),
        (
            "file_attached",
            json!({"task_id": tasks[0], "file_id": 501,
            "file_name": "report.pdf", "uploaded_by": inactive}),
        ),
        (
            "status_changed",
            json!({"task_id": tasks[0], "old_status": "todo",
            "new_status": "review", "changed_by": b, "reason": "ready"}),
        ),
        ("overdue_check", json!({})),
        ("deadline_reminder", json!({})),
    ];
    for (kind, payload) in jobs {
        let id = submit(herald.port, kind, payload).await;
        done(herald.port, &id).await;
    }
    let to_ada = ada.receive(3).await;
    assert_eq!(
        titles(&to_ada),
        ["File Attached", "Task Status Changed", "Task Overdue"]
    );
    let to_bob = bob.receive(3).await;
    assert_eq!(
        titles(&to_bob),
        ["Hi Bob", "File Attached", "Deadline Reminder"]
    );
    ada.silent().await;
    bob.silent().await;
    assert_eq!(to_ada[1]["notification_type"], "status_changed");
    assert_eq!(to_bob[0]["data"], json!({"url": "/tasks/"}));
    // The task ids (near 2^31, or past 2^53) came through each kind whole:
    // from the payload or tasks_task into the row, and into both sockets.
    let task_of = |event: &Value| event["data"]["task_id"].as_i64();
    assert_eq!(
        [&to_ada[0], &to_ada[1], &to_ada[2], &to_bob[1], &to_bob[2]].map(task_of),
        [tasks[0], tasks[0], tasks[0], tasks[0], tasks[1]].map(Some),
        "file_attached, status_changed, overdue_check to ada; file_attached, \
         deadline_reminder to bob"
    );

    // A user the application does not have: its foreign key refuses the
    // row, and the job is dead at once with the database's reason.
    let orphan = json!({"user_id": missing, "title": "t", "message": "m",
        "notification_type": "general"});
    let id = submit(herald.port, "notify", orphan).await;
    let job = dead(herald.port, &id).await;
    assert_eq!(job["attempts"], 1, "{job}");
    let reason = job["last_error"].as_str().unwrap();
    assert!(
        reason.contains("foreign key") || reason.contains("FOREIGN KEY"),
        "{reason}"
    );
    assert!(!reason.contains(" at line "), "{reason}");

    let stored = rows(&project);
    assert_eq!(stored.len(), 7, "{stored:?}");
    assert_eq!(stored.keys().next(), Some(&first_id), "one id sequence");
    matches_rows(&to_ada, &stored, a);
    matches_rows(&to_bob, &stored, b);
    for event in to_ada.iter().chain(&to_bob) {
        let row = &stored[&event["id"].as_i64().unwrap()];
        assert_eq!(row["data"], event["data"], "{row}");
    }
    // The scans key their rows by the task id, written out whole.
    let key = |event: &Value| stored[&event["id"].as_i64().unwrap()]["dedup_key"].clone();
    let (overdue, reminder) = (key(&to_ada[2]), key(&to_bob[2]));
    assert!(
        overdue
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("overdue:{}:", tasks[0]))),
        "{overdue}"
    );
    assert!(
        reminder
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("reminder:{}:", tasks[1]))),
        "{reminder}"
    );

    // Django migrates while herald runs: wider id, longer title, a new
    // column. Jobs keep succeeding, each on its first attempt.
    project.manage(&["migrate", "-v0", "notifications", "0003"]);
    let long_title = "L".repeat(300);
    for user in [a, b] {
        let payload = json!({"user_id": user, "title": long_title, "message": "after",
            "notification_type": "general"});
        let id = submit(herald.port, "notify", payload).await;
        let job = done(herald.port, &id).await;
        assert_eq!(job["attempts"], 1, "{job}");
    }
    assert_eq!(ada.receive(1).await[0]["title"], long_title.as_str());
    assert_eq!(bob.receive(1).await[0]["title"], long_title.as_str());
    assert_eq!(rows(&project).len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_auto_field_4_byte_ids() {
    every_kind_on_a_django_database(Variant::Auto, Database::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_big_auto_field_default_user() {
    every_kind_on_a_django_database(Variant::BigAuto, Database::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_custom_user_8_byte_ids() {
    every_kind_on_a_django_database(Variant::CustomUser, Database::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_auto_field_4_byte_ids() {
    every_kind_on_a_django_database(Variant::Auto, Database::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_big_auto_field_default_user() {
    every_kind_on_a_django_database(Variant::BigAuto, Database::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_custom_user_8_byte_ids() {
    every_kind_on_a_django_database(Variant::CustomUser, Database::Sqlite).await;
}

/// On SQLite herald never alters the application's table: without the
/// documented Django migration, `herald migrate` stops and says what to add.
#[tokio::test]
async fn sqlite_without_the_dedup_migration_is_refused_with_the_fix() {
    let project = DjangoProject::new(Variant::Auto, Database::Sqlite).await;
    project.manage(&["migrate", "-v0", "auth"]);
    project.manage(&["migrate", "-v0", "notifications", "0001"]);
    let refused = project.herald_migrate();
    assert!(!refused.status.success());
    let reason = text(&refused.stderr);
    assert!(
        reason.contains("dedup_key") && reason.contains("docs/django.md"),
        "{reason}"
    );
    assert!(
        !project
            .columns("notifications_notification")
            .contains_key("dedup_key")
    );
    project.manage(&["migrate", "-v0", "notifications", "0002"]);
    let migrated = project.herald_migrate();
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
}

/// A token signed with another key never reaches the application's consumer.
#[tokio::test]
async fn the_django_consumer_refuses_a_token_signed_with_another_key() {
    let project = DjangoProject::new(Variant::Auto, Database::Sqlite).await;
    project.manage(&["migrate", "-v0"]);
    project.interop(json!({"op": "setup", "users": [{"id": 77, "username": "u"}]}));
    let daphne = project.daphne();
    let other = SecretString::from("not-the-django-secret");
    let forged = herald::tokens::mint(&other, 77, Duration::from_secs(300)).unwrap();
    assert!(
        open(daphne.port, &forged).await.is_err(),
        "handshake refused"
    );
    assert!(
        open(daphne.port, &token(77)).await.is_ok(),
        "the real one works"
    );
}
