//! Connections to the Redis hosts ("shards"): one shared, self-reconnecting
//! connection per host for commands, and dedicated connections for blocking
//! pops, which must not hold up other commands.

use std::time::Duration;

use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::OnceCell;

use crate::layer::LayerError;
use crate::retry::Backoff;

/// Longest a command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Shard {
    client: Client,
    manager: OnceCell<ConnectionManager>,
}

impl Shard {
    pub(super) fn new(url: &str) -> Result<Self, LayerError> {
        let client = Client::open(url).map_err(|e| LayerError::Config(e.to_string()))?;
        Ok(Self {
            client,
            manager: OnceCell::new(),
        })
    }

    /// The shared connection, opened on first use; it reconnects by itself
    /// after Redis restarts.
    pub(super) async fn conn(&self) -> Result<ConnectionManager, LayerError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        self.manager
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await
            .cloned()
            .map_err(unavailable)
    }

    /// A subscriber connection (pub/sub layer).
    pub(super) async fn pubsub(&self) -> Result<redis::aio::PubSub, LayerError> {
        self.client.get_async_pubsub().await.map_err(unavailable)
    }

    /// A connection of its own for blocking commands (BZPOPMIN).
    pub(super) async fn blocking_conn(&self) -> Result<MultiplexedConnection, LayerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)
    }
}

/// One shard per configured host; at least one host is required.
pub(super) fn shards_for(hosts: &[String]) -> Result<Vec<Shard>, LayerError> {
    if hosts.is_empty() {
        return Err(LayerError::Config("no Redis hosts".into()));
    }
    hosts.iter().map(|url| Shard::new(url)).collect()
}

pub(super) fn unavailable(error: RedisError) -> LayerError {
    LayerError::Unavailable(error.to_string())
}

/// Exponential backoff with full jitter: 100 ms doubling up to 5 s.
pub(super) fn backoff(attempt: u32) -> Duration {
    let cap =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).nth_delay(attempt.min(6));
    let millis = rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}
