//! Celery's worker events, as a Celery worker sends them by default (its
//! "worker" group, on without `-E`): `worker-online` at start, a
//! `worker-heartbeat` every 2 s, `worker-offline` at a clean stop. Flower
//! lists a node only from these, and counts it online while heartbeats come
//! within twice their `freq`. They go to the `celeryev` exchange: on Redis a
//! `PUBLISH` on `/<db>.celeryev/<routing key>` (kombu's fanout with
//! patterns), on AMQP the `celeryev` topic exchange, the routing key the
//! event's type with a dot (`worker.heartbeat`).

use std::sync::Arc;
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
/// `worker-offline`; a broker that goes is tried again at the next beat.
pub async fn heartbeat(
    node: Arc<Node>,
    broker: Broker,
    settings: CelerySettings,
    stop: CancellationToken,
) {
    let mut sender = None;
    let mut online = false;
    let mut ticks = tokio::time::interval(FREQ);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
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
    let body = event(hostname, kind).to_string();
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
