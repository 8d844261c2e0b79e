//! Celery's remote control (kombu's "pidbox"), answered by a herald process
//! as one Celery worker node: `celery inspect`, `celery control`,
//! `AsyncResult.revoke()` and Flower broadcast a command to every node and
//! gather the replies. This file knows the commands and the replies in the
//! shapes Celery's CLI and Flower parse (celery `worker/control.py`); each
//! broker has its room for the transport: `redis` (a PUBLISH on the fanout
//! channel, replies pushed to the caller's reply list) and `amqp` (a queue
//! per node bound to the `celery.pidbox` fanout exchange, replies to the
//! `reply.celery.pidbox` exchange).
//!
//! A revoke goes through [`Revoker`]: kept in the database for every herald
//! process, its waiting job cancelled, its result REVOKED.

pub mod amqp;
pub mod events;
pub mod redis;

use std::time::Instant;

use serde_json::{Value, json};

use super::revoke::Revoker;
use crate::config::CelerySettings;

/// What the commands a node does not obey answer.
const NOT_SUPPORTED: &str = "not supported by herald";

/// One herald process as a Celery worker node.
pub struct Node {
    pub name: String,
    settings: CelerySettings,
    revoker: Revoker,
    started: Instant,
}

/// A command as the broadcast carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub method: String,
    pub arguments: Value,
    /// The nodes it is for; none: every node.
    pub destination: Option<Vec<String>>,
    /// Or a pattern of node names and its matcher (`glob`, `pcre`).
    pub pattern: Option<(String, String)>,
    /// Where the reply goes: exchange and routing key; none: no reply.
    pub reply_to: Option<(String, String)>,
    pub ticket: Option<String>,
}

impl Command {
    /// A broadcast's body (`{"method", "arguments", "destination",
    /// "reply_to", "ticket"}`); none when it is not one.
    pub fn parse(body: &Value) -> Option<Command> {
        let method = body.get("method")?.as_str()?.to_string();
        let destination = body.get("destination").and_then(|d| {
            d.as_array().map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
        });
        let reply_to = body.get("reply_to").and_then(|r| {
            Some((
                r.get("exchange")?.as_str()?.to_string(),
                r.get("routing_key")?.as_str()?.to_string(),
            ))
        });
        let pattern = match (body.get("pattern"), body.get("matcher")) {
            (Some(Value::String(pattern)), Some(Value::String(matcher))) => {
                Some((pattern.clone(), matcher.clone()))
            }
            _ => None,
        };
        Some(Command {
            method,
            pattern,
            arguments: body.get("arguments").cloned().unwrap_or_else(|| json!({})),
            destination,
            reply_to,
            ticket: body
                .get("ticket")
                .and_then(|t| t.as_str().map(str::to_string)),
        })
    }
}

/// The node name of this process: `celery.hostname`, or
/// `herald-<pid>@<hostname>`.
pub fn node_name(settings: &CelerySettings) -> String {
    if !settings.hostname.trim().is_empty() {
        return settings.hostname.trim().to_string();
    }
    let host = hostname();
    format!("herald-{}@{host}", std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Node {
    pub fn new(settings: &CelerySettings, revoker: Revoker) -> Node {
        Node {
            name: node_name(settings),
            settings: settings.clone(),
            revoker,
            started: Instant::now(),
        }
    }

    /// The reply to `command`, as kombu sends it (`{node name: reply}`);
    /// none when the command is not for this node: not in its
    /// `destination`, not matching its `pattern` (kombu's `Node`).
    pub async fn respond(&self, command: &Command) -> Option<Value> {
        if !is_for(&self.name, command) {
            return None;
        }
        let reply = self.reply(&command.method, &command.arguments).await;
        Some(json!({ self.name.clone(): reply }))
    }

    async fn reply(&self, method: &str, arguments: &Value) -> Value {
        match method {
            "ping" => json!({"ok": "pong"}),
            "revoke" => self.revoke(arguments).await,
            "registered" | "dump_tasks" => json!(self.settings.tasks.keys().collect::<Vec<_>>()),
            "active_queues" => json!(
                self.settings
                    .queues
                    .iter()
                    .map(|queue| queue_as_dict(queue, &self.settings))
                    .collect::<Vec<_>>()
            ),
            "stats" => self.stats(),
            "revoked" | "dump_revoked" => match self.revoker.store().recent_revokes(5000).await {
                Ok(rows) => json!(rows.into_iter().map(|(id, _, _)| id).collect::<Vec<_>>()),
                Err(error) => json!({"error": format!("revoked ids unavailable: {error}")}),
            },
            "scheduled" | "dump_schedule" => self.scheduled().await,
            // A job is held only while it runs, and runs at once: nothing
            // waits reserved in a herald process's memory.
            "reserved" | "dump_reserved" => json!([]),
            "active" | "dump_active" => json!([]),
            "report" => json!({"ok": format!(
                "herald {} (a Celery worker node; Celery's remote control answered for \
                 ping, revoke, registered, active_queues, stats, revoked)",
                env!("CARGO_PKG_VERSION")
            )}),
            "clock" => json!({"clock": 0}),
            "enable_events" => json!({"ok": if events::set_task_events(true) {
                "task events already enabled"
            } else {
                "task events enabled"
            }}),
            "disable_events" => json!({"ok": if events::set_task_events(false) {
                "task events disabled"
            } else {
                "task events already disabled"
            }}),
            "shutdown" | "pool_restart" | "pool_grow" | "pool_shrink" | "autoscale"
            | "rate_limit" | "time_limit" | "add_consumer" | "cancel_consumer" => {
                json!({"error": format!("{method}: {NOT_SUPPORTED}")})
            }
            // kombu's Node.dispatch answers a handler it lacks so.
            unknown => json!({"error": format!("KeyError('{unknown}')")}),
        }
    }

    /// Celery's `revoke`: one id or a list; `terminate` cannot stop a job
    /// already running (herald does not kill a job in the middle of its
    /// writes), and the reply says so.
    async fn revoke(&self, arguments: &Value) -> Value {
        let ids: Vec<String> = match arguments.get("task_id") {
            Some(Value::String(id)) => vec![id.clone()],
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(|id| id.as_str().map(str::to_string))
                .collect(),
            _ => return json!({"error": "revoke needs task_id: an id or a list of ids"}),
        };
        let terminate = arguments
            .get("terminate")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match self.revoker.revoke(&ids, terminate).await {
            Err(error) => json!({"error": format!("revoke not recorded: {error}")}),
            Ok(revoked) if terminate => {
                let running: Vec<&str> = revoked
                    .past
                    .iter()
                    .filter(|(_, state)| state == "running")
                    .map(|(id, _)| id.as_str())
                    .collect();
                if running.is_empty() {
                    json!({"ok": "terminate: tasks unknown"})
                } else {
                    json!({"ok": format!(
                        "terminate: not done by herald, which does not stop a running job: {}",
                        running.join(", ")
                    )})
                }
            }
            Ok(_) => json!({"ok": format!("tasks {} flagged as revoked", python_set(&ids))}),
        }
    }

    /// Celery's `scheduled`: the countdowns waiting in the ledger (the
    /// fleet's: every herald process shares them), in the shape of a
    /// worker's timer entries.
    async fn scheduled(&self) -> Value {
        let rows = match self.revoker.store().celery_countdowns(1000).await {
            Ok(rows) => rows,
            Err(error) => return json!({"error": format!("the ledger is unavailable: {error}")}),
        };
        let entries: Vec<Value> = rows
            .into_iter()
            .map(|(id, kind, payload, run_at)| {
                let name = self
                    .settings
                    .tasks
                    .iter()
                    .find(|(_, task)| task.kind == kind)
                    .map_or(kind.clone(), |(name, _)| name.clone());
                let kwargs: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                json!({
                    "eta": run_at.to_rfc3339(),
                    "priority": 6,
                    "request": {
                        "id": id, "name": name, "args": [], "kwargs": kwargs,
                        "type": name, "hostname": self.name, "time_start": null,
                        "acknowledged": true, "delivery_info": {}, "worker_pid": null,
                    },
                })
            })
            .collect();
        json!(entries)
    }

    /// The parts of a Celery worker's `stats` that Flower and `celery
    /// inspect stats` read.
    fn stats(&self) -> Value {
        json!({
            "pid": std::process::id(),
            "clock": "0",
            "uptime": self.started.elapsed().as_secs(),
            "total": {},
            "prefetch_count": self.settings.batch_size,
            "pool": {
                "implementation": "herald",
                "max-concurrency": self.settings.concurrency,
                "processes": [std::process::id()],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
                "writes": {"total": 0, "avg": "0.00%", "all": "", "raw": "", "strategy": "", "inqueues": {"total": 0, "active": 0}},
            },
            "broker": {"transport": if super::broker::amqp::is_amqp(
                secrecy::ExposeSecret::expose_secret(&self.settings.broker_url)) { "amqp" } else { "redis" }},
            "rusage": "N/A",
        })
    }
}

fn is_for(name: &str, command: &Command) -> bool {
    if let Some(names) = command
        .destination
        .as_ref()
        .filter(|names| !names.is_empty())
    {
        return names.iter().any(|n| n == name);
    }
    match &command.pattern {
        Some((pattern, matcher)) => matches(name, pattern, matcher),
        None => true,
    }
}

/// kombu's `matcher.match`: `glob` (fnmatch) or `pcre` (a regex that must
/// match at the start, as Python's `re.match`).
fn matches(name: &str, pattern: &str, matcher: &str) -> bool {
    match matcher {
        "pcre" => regex::Regex::new(&format!("^(?:{pattern})")).is_ok_and(|re| re.is_match(name)),
        _ => globset::Glob::new(pattern)
            .map(|glob| glob.compile_matcher().is_match(name))
            .unwrap_or(false),
    }
}

/// Python's repr of a set of strings, as Celery's reply prints it.
fn python_set(ids: &[String]) -> String {
    let items: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!("{{{}}}", items.join(", "))
}

/// kombu's `Queue.as_dict(recurse=True)` of one of herald's queues, as
/// `active_queues` answers it.
fn queue_as_dict(queue: &str, settings: &CelerySettings) -> Value {
    let exchange_type = if settings.queue_exchange_type == "topic" {
        "topic"
    } else {
        "direct"
    };
    json!({
        "name": queue,
        "exchange": {
            "name": queue, "type": exchange_type, "arguments": null, "durable": true,
            "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false,
        },
        "routing_key": queue,
        "queue_arguments": null,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": true,
        "exclusive": false,
        "auto_delete": false,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": if settings.queue_max_priority > 0 { json!(settings.queue_max_priority) } else { Value::Null },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_body_is_read() {
        let body = json!({
            "method": "revoke", "arguments": {"task_id": ["a", "b"]},
            "destination": null,
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k1"},
            "ticket": "t1",
        });
        let command = Command::parse(&body).unwrap();
        assert_eq!(command.method, "revoke");
        assert_eq!(command.destination, None);
        assert_eq!(
            command.reply_to,
            Some(("reply.celery.pidbox".into(), "k1".into()))
        );
        assert_eq!(command.ticket.as_deref(), Some("t1"));
        assert!(Command::parse(&json!({"arguments": {}})).is_none());
    }

    #[test]
    fn destination_and_pattern_choose_the_nodes() {
        let on = |destination: Value, pattern: Value, matcher: Value| {
            let body = json!({"method": "ping", "destination": destination,
                "pattern": pattern, "matcher": matcher});
            is_for("herald-7@web1", &Command::parse(&body).unwrap())
        };
        assert!(on(json!(["herald-7@web1"]), json!(null), json!(null)));
        assert!(!on(json!(["celery@web1"]), json!(null), json!(null)));
        assert!(on(json!(null), json!("herald-*@web1"), json!("glob")));
        assert!(!on(json!(null), json!("celery@*"), json!("glob")));
        assert!(on(json!(null), json!("herald-\\d+@"), json!("pcre")));
        assert!(on(json!(null), json!(null), json!(null)));
    }

    #[test]
    fn ids_print_as_celery_prints_its_set() {
        assert_eq!(python_set(&["a".into(), "b".into()]), "{'a', 'b'}");
    }
}
