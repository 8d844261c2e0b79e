//! The channel layer's figures: its backend, a `PING` to each of its Redis
//! hosts (on a connection kept for the next read), and the outbox's
//! notifications committed and not yet published.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;
use utoipa::ToSchema;

use super::Collector;
use crate::config::{LayerBackend, Settings};
use crate::store::OutboxBacklog;

/// How long a shard may take to answer `PING`.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The channel layer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Layer {
    /// `memory`, `redis` or `redis_pubsub`.
    pub backend: String,
    pub shards: Vec<Shard>,
    pub outbox: Outbox,
}

/// One Redis host of the layer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shard {
    /// host:port (credentials left out).
    pub host: String,
    pub up: bool,
    /// `PING` round trip.
    pub rtt_ms: Option<f64>,
}

/// Notifications committed and not yet published.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Outbox {
    pub entries: i64,
    pub notifications: i64,
    /// How long the oldest entry's next attempt is overdue (0 when due
    /// later).
    pub oldest_overdue_seconds: f64,
}

/// A Redis host of the layer and a connection to ping it on.
pub(super) struct ShardProbe {
    host: String,
    client: Option<redis::Client>,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl ShardProbe {
    /// One probe per Redis host of the layer (none for the in-memory one).
    pub(super) fn of_layer(settings: &Settings) -> Vec<ShardProbe> {
        match settings.layer.backend {
            LayerBackend::Memory => Vec::new(),
            _ => settings
                .layer
                .hosts
                .iter()
                .map(|url| ShardProbe {
                    host: redact(url),
                    client: redis::Client::open(url.as_str()).ok(),
                    conn: Mutex::new(None),
                })
                .collect(),
        }
    }

    async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let Some(client) = &self.client else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "bad URL",
                )));
            };
            *conn = Some(client.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = conn.as_mut() else {
            return Ok(());
        };
        redis::cmd("PING")
            .query_async::<String>(conn)
            .await
            .map(|_| ())
    }
}

impl Collector {
    /// `PING`s every shard at once, each on a connection kept for the next
    /// time (dropped when it fails).
    pub(super) async fn ping_shards(&self) -> Vec<Shard> {
        let pings = self.shards.iter().map(|probe| async move {
            let started = Instant::now();
            let answered = tokio::time::timeout(PING_TIMEOUT, probe.ping()).await;
            let up = matches!(answered, Ok(Ok(())));
            if !up {
                *probe.conn.lock().await = None;
            }
            Shard {
                host: probe.host.clone(),
                up,
                rtt_ms: up.then(|| started.elapsed().as_secs_f64() * 1000.0),
            }
        });
        futures_util::future::join_all(pings).await
    }

    /// The channel layer's shards and the outbox's backlog.
    pub(super) fn layer(
        &self,
        shards: Vec<Shard>,
        backlog: &OutboxBacklog,
        now: DateTime<Utc>,
    ) -> Layer {
        let oldest_overdue_seconds = backlog
            .oldest
            .map(|at| ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0);
        let backend = match self.settings.layer.backend {
            LayerBackend::Memory => "memory",
            LayerBackend::Redis => "redis",
            LayerBackend::RedisPubsub => "redis_pubsub",
        };
        Layer {
            backend: backend.into(),
            shards,
            outbox: Outbox {
                entries: backlog.entries,
                notifications: backlog.notifications,
                oldest_overdue_seconds,
            },
        }
    }
}

/// `redis://user:password@host:6379/0` as `host:6379/0`.
pub fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    rest.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hosts_leave_out_credentials() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redact("redis://:secret@cache:6380/2"), "cache:6380/2");
        assert_eq!(redact("rediss://user:p@ss@h:1"), "h:1");
    }
}
