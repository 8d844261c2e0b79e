//! Opening what every role shares: the database ([`store`]), the job queue
//! ([`queue`]) and the channel layer ([`layer`]), with the one-line context
//! an operator reads when one of them cannot be reached. Used by the
//! commands and by `startup` alike.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{ConfigError, LayerBackend, Settings};
use crate::layer::ChannelLayer;
use crate::queue::JobQueue;
use crate::store::{PoolOptions, Store};

/// Opens the configured database.
pub async fn store(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.database_url()?;
    let options = PoolOptions {
        max_connections: settings.database.max_connections,
        acquire_timeout: settings.database.acquire_timeout,
    };
    Store::connect(&url, options)
        .await
        .context("could not open the database")
}

/// Opens the configured job queue.
pub async fn queue(settings: &Settings) -> anyhow::Result<JobQueue> {
    JobQueue::connect(settings)
        .await
        .context("could not open the job queue")
}

/// Builds the configured channel layer.
pub fn layer(settings: &Settings) -> anyhow::Result<Arc<dyn ChannelLayer>> {
    crate::layer::build(&settings.layer).context("could not build the channel layer")
}

/// The channel layer of a command that runs apart from its peer (`herald
/// sidecar` apart from the worker, or the other way round): it must be one
/// both reach, never the in-memory layer.
pub fn shared_layer(
    settings: &Settings,
    command: &str,
    peer: &str,
) -> anyhow::Result<Arc<dyn ChannelLayer>> {
    if settings.layer.backend == LayerBackend::Memory {
        let reason = format!(
            "`herald {command}` runs apart from the {peer}, so it needs a shared layer: \
             set \"redis\" or \"redis_pubsub\" (the memory layer only serves `herald run`)"
        );
        return Err(ConfigError::new("layer.backend", reason).into());
    }
    layer(settings)
}
