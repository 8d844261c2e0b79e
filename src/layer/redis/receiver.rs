//! The receive side: one loop per process queue key pops messages (a
//! blocking pop, then whatever else is waiting, in bulk) with an `$inflight`
//! backup, and hands them to the local channels they name. Beside it, the
//! memberships of local channels are renewed well before group_expiry and
//! restored whenever the loop had to reconnect (Redis restarted or the
//! connection dropped), without restarting the process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::keys::{inflight_key, queue_key};
use super::shards::{backoff, unavailable};
use super::{ASGI_CHANNEL, Inner, now, scripts};
use crate::layer::lock;
use crate::layer::{LayerError, Message};

/// Seconds one blocking pop waits before looping (and checking for stop).
const POP_TIMEOUT_SECS: f64 = 1.0;
/// Messages taken in one go after the blocking pop.
const BATCH: usize = 512;

/// Starts the receive loop for `non_local` (`specific.<id>!`) unless it runs.
pub(super) fn ensure_reader(inner: &Arc<Inner>, non_local: &str) {
    let first_reader = {
        let mut readers = lock(&inner.readers);
        let first = readers.is_empty();
        if !readers.insert(non_local.to_string()) {
            return;
        }
        first
    };
    let queue = queue_key(&inner.prefix, non_local);
    let shard = inner.shard_for(non_local);
    tokio::spawn(receive_loop(inner.clone(), queue, shard));
    if first_reader {
        tokio::spawn(renew_memberships(inner.clone()));
    }
}

async fn receive_loop(inner: Arc<Inner>, queue: String, shard: usize) {
    let inflight = inflight_key(&queue);
    let mut failures: u32 = 0;
    let mut conn: Option<MultiplexedConnection> = None;
    while !inner.stop.is_cancelled() {
        let step = async {
            if conn.is_none() {
                let mut fresh = inner.shards[shard].blocking_conn().await?;
                // Pipelined scripts run by hash: load it on each new connection.
                scripts::POP_BATCH
                    .prepare_invoke()
                    .load_async(&mut fresh)
                    .await
                    .map_err(unavailable)?;
                conn = Some(fresh);
                if failures > 0 {
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::telemetry::metrics::LAYER_RECONNECTS, "layer" => "redis")
                        .increment(1);
                    tracing::warn!(
                        queue,
                        attempts = failures,
                        "channel layer reconnected to Redis"
                    );
                    restore_memberships(&inner).await?;
                }
            }
            let conn = conn.as_mut().expect("connected above");
            receive_batch(&inner, conn, &queue, &inflight).await
        };
        let result = tokio::select! {
            result = step => result,
            () = inner.stop.cancelled() => break,
        };
        match result {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                conn = None;
                tracing::warn!(queue, %error, attempt = failures, "channel layer receive failed; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff(failures)) => {}
                    () = inner.stop.cancelled() => break,
                }
            }
        }
    }
}

/// Restores the backup, waits for a message, takes the rest in bulk, hands
/// them over, then clears the backup.
async fn receive_batch(
    inner: &Inner,
    conn: &mut MultiplexedConnection,
    queue: &str,
    inflight: &str,
) -> Result<(), LayerError> {
    scripts::RESTORE_INFLIGHT
        .key(queue)
        .key(inflight)
        .invoke_async::<i64>(conn)
        .await
        .map_err(unavailable)?;
    let popped: Option<(Vec<u8>, Vec<u8>, f64)> = redis::cmd("BZPOPMIN")
        .arg(queue)
        .arg(POP_TIMEOUT_SECS)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let Some((_, first, score)) = popped else {
        return Ok(());
    };
    let (rest,): (Vec<(Vec<u8>, f64)>,) = redis::pipe()
        .zadd(inflight, &first, score)
        .ignore()
        .invoke_script(scripts::POP_BATCH.key(queue).key(inflight).arg(BATCH))
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    tracing::trace!(queue, batch = rest.len() + 1, "received from Redis");
    for member in std::iter::once(first).chain(rest.into_iter().map(|(m, _)| m)) {
        match inner.codec.decode(&member) {
            Ok(message) => inner.dispatch(message, queue),
            Err(error) => tracing::warn!(queue, %error, "undecodable layer message dropped"),
        }
    }
    redis::cmd("DEL")
        .arg(inflight)
        .query_async::<()>(conn)
        .await
        .map_err(unavailable)
}

/// Re-adds every membership of this process's channels.
async fn restore_memberships(inner: &Inner) -> Result<(), LayerError> {
    let memberships: Vec<(String, Vec<String>)> = lock(&inner.memberships)
        .iter()
        .map(|(group, channels)| (group.clone(), channels.iter().cloned().collect()))
        .collect();
    let mut count = 0usize;
    for (group, channels) in memberships {
        for channel in channels {
            inner.add_membership(&group, &channel).await?;
            count += 1;
        }
    }
    if count > 0 {
        tracing::info!(memberships = count, "group memberships restored");
    }
    Ok(())
}

/// Renews memberships every quarter of group_expiry (at least every second,
/// at most every hour), so a long-lived channel is never pruned.
async fn renew_memberships(inner: Arc<Inner>) {
    let every = Duration::from_secs(inner.group_expiry / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.stop.cancelled() => return,
        }
        if let Err(error) = restore_memberships(&inner).await {
            tracing::warn!(%error, "renewing group memberships failed; will retry");
        }
    }
}

/// `receive` on a general (non-`!`) channel: pops that key directly,
/// trying the shards in turn, with the same `$inflight` backup.
pub(super) async fn receive_general(inner: &Inner, channel: &str) -> Result<Message, LayerError> {
    let queue = queue_key(&inner.prefix, channel);
    let inflight = inflight_key(&queue);
    loop {
        if inner.stop.is_cancelled() {
            return Err(LayerError::Closed);
        }
        let shard = inner.next_shard();
        let mut conn = inner.shards[shard].blocking_conn().await?;
        scripts::RESTORE_INFLIGHT
            .key(&queue)
            .key(&inflight)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        let popped: Option<(Vec<u8>, Vec<u8>, f64)> = redis::cmd("BZPOPMIN")
            .arg(&queue)
            .arg(POP_TIMEOUT_SECS)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some((_, member, _)) = popped else {
            continue;
        };
        let mut message = inner.codec.decode(&member)?;
        message.remove(ASGI_CHANNEL);
        let _ = now();
        return Ok(message);
    }
}
