//! Celery's events. The worker events, as a Celery worker sends them by
//! default (its "worker" group, on without `-E`): `worker-online` at start,
//! a `worker-heartbeat` every 2 s, `worker-offline` at a clean stop. Flower
//! lists a node only from these, and counts it online while heartbeats come
//! within twice their `freq`. The task events (`task-received`, `-started`,
//! `-succeeded`, `-failed`, `-retried`, `-revoked`) go out while they are on
//! (`celery.send_task_events`, Celery's `worker_send_task_events`, or after
//! an `enable_events` command, which Flower sends every few seconds): the
//! ingress and the worker hand them to [`task_event`], and the one loop of
//! the process that holds the broker connection publishes them. They are
//! monitoring, best effort: past 10,000 waiting (a broker gone for long),
//! new ones are dropped and counted in the log. They go to the `celeryev` exchange: on Redis a
//! `PUBLISH` on `/<db>.celeryev/<routing key>` (kombu's fanout with
//! patterns), on AMQP the `celeryev` topic exchange, the routing key the
//! event's type with a dot (`worker.heartbeat`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::config::CelerySettings;
use crate::ingress::broker::Broker;

/// How often a heartbeat goes out (Celery's `freq`).
const FREQ: Duration = Duration::from_secs(2);
const EXCHANGE: &str = "celeryev";
/// Task events waiting to go out, at most.
const WAITING: usize = 10_000;

/// Whether task events go out now (one node per process).
static TASK_EVENTS: AtomicBool = AtomicBool::new(false);
/// Where task events wait for the events loop (the latest ingress's).
static OUTBOX: Mutex<Option<tokio::sync::mpsc::Sender<Value>>> = Mutex::new(None);

/// Turns task events on or off; whether they were on.
pub fn set_task_events(on: bool) -> bool {
    TASK_EVENTS.swap(on, Ordering::SeqCst)
}

/// Whether task events go out now.
pub fn task_events_on() -> bool {
    TASK_EVENTS.load(Ordering::SeqCst)
}

/// Hands a task event (`task-succeeded`, ...) with its fields (`uuid`,
/// ...) to the events loop, when task events are on.
pub fn task_event(kind: &str, mut fields: Value) {
    if !task_events_on() {
        return;
    }
    let Some(outbox) = crate::layer::lock(&OUTBOX).clone() else {
        return;
    };
    fields["type"] = json!(kind);
    if outbox.try_send(fields).is_err() {
        tracing::debug!(kind, "a Celery task event dropped: too many waiting");
    }
}

/// Where events go.
enum Sender {
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
        db: i64,
    },
    Amqp {
        channel: Box<lapin::Channel>,
        _connection: Box<lapin::Connection>,
    },
}

/// Sends `worker-online`, then heartbeats until `stop`, then
/// `worker-offline`, and the task events handed to [`task_event`] as they
/// come; a broker that goes is tried again at the next beat.
pub async fn heartbeat(
    node: Arc<Node>,
    broker: Broker,
    settings: CelerySettings,
    stop: CancellationToken,
) {
    if settings.send_task_events {
        set_task_events(true);
    }
    let (outbox, mut events) = tokio::sync::mpsc::channel(WAITING);
    *crate::layer::lock(&OUTBOX) = Some(outbox);
    let mut sender = None;
    let mut online = false;
    let mut ticks = tokio::time::interval(FREQ);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            Some(task) = events.recv() => {
                if let Some(open) = sender.as_mut()
                    && let Err(error) = send_task(open, &node.name, task).await
                {
                    tracing::debug!(%error, "could not send a Celery task event; connecting again");
                    sender = None;
                }
                continue;
            }
            () = stop.cancelled() => true,
        };
        if sender.is_none() {
            sender = connect(&node, &broker, &settings).await;
        }
        let Some(open) = sender.as_mut() else {
            if stopping {
                return;
            }
            continue;
        };
        let kind = match (stopping, online) {
            (true, _) => "worker-offline",
            (false, false) => "worker-online",
            (false, true) => "worker-heartbeat",
        };
        match send(open, &node.name, kind).await {
            Ok(()) => online = true,
            Err(error) => {
                tracing::debug!(%error, kind, "could not send a Celery event; connecting again");
                sender = None;
            }
        }
        if stopping {
            return;
        }
    }
}

async fn connect(node: &Node, broker: &Broker, settings: &CelerySettings) -> Option<Sender> {
    match broker {
        Broker::Redis(_) => {
            let client = redis::Client::open(settings.broker_url.expose_secret().trim()).ok()?;
            let db = client.get_connection_info().redis_settings().db();
            let conn = client
                .get_connection_manager_with_config(crate::ingress::redis_timeouts())
                .await
                .ok()?;
            Some(Sender::Redis {
                conn,
                prefix: settings.global_keyprefix.clone(),
                db,
            })
        }
        Broker::Amqp(amqp) => {
            let connection = amqp
                .connect(&format!("herald:events:{}", node.name))
                .await
                .ok()?;
            let channel = connection.create_channel().await.ok()?;
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    EXCHANGE.into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await
                .ok()?;
            Some(Sender::Amqp {
                channel: Box::new(channel),
                _connection: Box::new(connection),
            })
        }
    }
}

/// A task event with the fields every event has.
async fn send_task(sender: &mut Sender, hostname: &str, mut task: Value) -> Result<(), String> {
    let kind = task["type"].as_str().unwrap_or("task-unknown").to_string();
    task["hostname"] = json!(hostname);
    task["utcoffset"] = json!(0);
    task["pid"] = json!(std::process::id());
    task["clock"] = json!(0);
    task["timestamp"] = json!(crate::ingress::broker::redis::unix_now());
    publish(sender, hostname, &kind, task.to_string()).await
}

/// One worker event in Celery's fields.
fn event(hostname: &str, kind: &str) -> Value {
    let loadavg: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect();
    json!({
        "hostname": hostname,
        "utcoffset": 0,
        "pid": std::process::id(),
        "clock": 0,
        "freq": FREQ.as_secs_f64(),
        "active": 0,
        "processed": 0,
        "loadavg": loadavg,
        "sw_ident": "herald",
        "sw_ver": env!("CARGO_PKG_VERSION"),
        "sw_sys": std::env::consts::OS,
        "timestamp": crate::ingress::broker::redis::unix_now(),
        "type": kind,
    })
}

async fn send(sender: &mut Sender, hostname: &str, kind: &str) -> Result<(), String> {
    publish(sender, hostname, kind, event(hostname, kind).to_string()).await
}

/// Publishes an event's `body` to `celeryev`, keyed by its type.
async fn publish(
    sender: &mut Sender,
    hostname: &str,
    kind: &str,
    body: String,
) -> Result<(), String> {
    let routing_key = kind.replacen('-', ".", 1);
    match sender {
        Sender::Redis { conn, prefix, db } => {
            let envelope = json!({
                "body": base64::engine::general_purpose::STANDARD.encode(&body),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"hostname": hostname},
                "properties": {
                    "delivery_mode": 1,
                    "delivery_info": {"exchange": EXCHANGE, "routing_key": routing_key},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": uuid::Uuid::new_v4().to_string(),
                },
            });
            redis::cmd("PUBLISH")
                .arg(format!("{prefix}/{db}.{EXCHANGE}/{routing_key}"))
                .arg(envelope.to_string())
                .query_async::<()>(conn)
                .await
                .map_err(|e| e.to_string())
        }
        Sender::Amqp { channel, .. } => {
            let mut headers = FieldTable::default();
            headers.insert(
                "hostname".into(),
                AMQPValue::LongString(LongString::from(hostname)),
            );
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(1)
                .with_headers(headers);
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

/// `task-received`: a message recorded as a job.
pub fn received(task: &crate::ingress::TaskMessage) {
    let args = task.args.iter().map(py_repr).collect::<Vec<_>>();
    let args = match args.len() {
        1 => format!("({},)", args[0]),
        _ => format!("({})", args.join(", ")),
    };
    task_event(
        "task-received",
        json!({
            "uuid": task.id, "name": task.task, "args": args,
            "kwargs": py_repr(&Value::Object(task.kwargs.clone())),
            "root_id": task.id, "parent_id": null, "retries": 0,
            "eta": task.eta.map(|at| at.to_rfc3339()),
            "expires": task.expires.map(|at| at.to_rfc3339()),
        }),
    );
}

/// The event of a task's end: `task-succeeded` (with its result's repr
/// and the run time), `task-failed` or `task-revoked`.
pub fn ended(task_id: &str, outcome: &crate::ingress::Outcome, runtime: Option<f64>) {
    use crate::ingress::Outcome;
    match outcome {
        Outcome::Success(value) => task_event(
            "task-succeeded",
            json!({"uuid": task_id, "result": py_repr(value), "runtime": runtime.unwrap_or(0.0)}),
        ),
        Outcome::Failure {
            exc_type, message, ..
        } => task_event(
            "task-failed",
            json!({"uuid": task_id, "exception": format!("{exc_type}({})", py_repr(&json!(message))),
                   "traceback": format!("herald: {exc_type}: {message}\n")}),
        ),
        Outcome::Revoked(reason) => task_event(
            "task-revoked",
            json!({"uuid": task_id, "terminated": false, "signum": null,
                   "expired": reason == "expired"}),
        ),
        Outcome::Started(_) => task_event("task-started", json!({"uuid": task_id})),
    }
}

/// `task-retried`: an attempt failed and the job runs again later.
pub fn retried(task_id: &str, error: &str) {
    task_event(
        "task-retried",
        json!({"uuid": task_id, "exception": format!("RuntimeError({})", py_repr(&json!(error))),
               "traceback": format!("herald: RuntimeError: {error}\n")}),
    );
}

/// Python's `repr` of a JSON value, as Celery's events carry arguments and
/// results (`saferepr`).
pub fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_python_reprs_them() {
        let value =
            json!({"created": 1, "name": "it's", "ok": true, "none": null, "list": [1, "a"]});
        assert_eq!(
            py_repr(&value),
            "{'created': 1, 'name': 'it\\'s', 'ok': True, 'none': None, 'list': [1, 'a']}"
        );
    }
}
