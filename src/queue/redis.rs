//! The Redis queue: a connection manager on `queue.redis_url`, and the
//! promotion of due entries from apalis-redis's scheduled set to its active
//! list that every poll runs first (see [`promote_due`]).

use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionManager;

use super::QueueError;
use super::apalis_layout::redis::PROMOTE_DUE;
use crate::config::Settings;

/// Entries one Lua call or SSCAN step handles: under Lua's unpack limit.
pub(crate) const PROMOTE_CHUNK: usize = 1000;

/// Connects to `queue.redis_url`.
pub(super) async fn connect(settings: &Settings) -> Result<ConnectionManager, QueueError> {
    let url = settings.queue_redis_url().unwrap_or_default();
    // Longer than the default response timeout: a fetch or an
    // ack over a deep queue may take a while under load.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let client = redis::Client::open(url)?;
    Ok(client.get_connection_manager_with_config(config).await?)
}

/// apalis-redis queues every entry through its scheduled set, and its fetch
/// script moves all due entries at once with one Lua `unpack`, which fails
/// (for good, on every fetch) past about 8,000. This moves due entries to the
/// queue's active list in chunks first, as that fetch would; run it on every
/// poll. Returns how many it moved.
pub(crate) async fn promote_due(
    conn: &mut ConnectionManager,
    config: &apalis_redis::Config,
) -> Result<usize, redis::RedisError> {
    let now = Utc::now().timestamp();
    let mut moved = 0;
    loop {
        let count: usize = PROMOTE_DUE
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .arg(now)
            .arg(PROMOTE_CHUNK)
            .invoke_async(conn)
            .await?;
        moved += count;
        if count < PROMOTE_CHUNK {
            return Ok(moved);
        }
    }
}
