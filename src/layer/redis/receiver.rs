//! The receive side: one loop per process queue key pops whatever is
//! waiting in one blocking round trip (`BZMPOP`, up to 512 messages) and
//! hands each message to the local channels it names in the same step; at
//! every (re)connect, and whenever a pop finds nothing, it restores
//! `$inflight`, channels_redis's backup of popped messages not handed over. Beside it, the
//! memberships of local channels are renewed well before group_expiry and
//! restored whenever the loop had to reconnect (Redis restarted or the
//! connection dropped), without restarting the process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::keys::{inflight_key, queue_key};
use super::shards::{backoff, unavailable};
use super::{ASGI_CHANNEL, Inner, scripts};
use crate::layer::lock;
use crate::layer::{LayerError, Message};

/// Seconds one blocking pop waits before looping (and checking for stop).
const POP_TIMEOUT_SECS: f64 = 1.0;
/// Most messages one pop takes.
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
    let mut pop = Pop::Batch;
    // When this queue was last known not to have overflowed at a sender:
    // the reply of the last pop that found it below capacity.
    let mut whole_until = crate::layer::wall_clock();
    while !inner.stop.is_cancelled() {
        let step = async {
            if conn.is_none() {
                let mut fresh = inner.shards[shard].blocking_conn().await?;
                restore_inflight(&mut fresh, &queue, &inflight).await?;
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
                    // Memberships are back: anything published before this
                    // (to a restarted Redis, or while the queue expired) is
                    // read from the database by the channels' consumers.
                    inner.restoring.store(false, Ordering::Release);
                    inner
                        .local
                        .resync_all("Redis connection restored", whole_until);
                }
            }
            let conn = conn.as_mut().expect("connected above");
            let received = receive_batch(&inner, conn, &queue, &mut pop, &mut whole_until).await?;
            if received == 0 {
                // Idle: a good moment to pick up anything left in $inflight.
                restore_inflight(conn, &queue, &inflight).await?;
            }
            Ok::<(), LayerError>(())
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
                inner.restoring.store(true, Ordering::Release);
                tracing::warn!(queue, %error, attempt = failures, "channel layer receive failed; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(backoff(failures)) => {}
                    () = inner.stop.cancelled() => break,
                }
            }
        }
    }
}

/// A `BZMPOP` reply: the key, then (member, score) pairs.
type Popped = (String, Vec<(Vec<u8>, f64)>);

/// How the loop pops: `BZMPOP` takes a whole batch in one blocking round
/// trip (Redis 7+); older servers get one `BZPOPMIN` per message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pop {
    Batch,
    One,
}

/// Puts back what a reader of this key popped and did not hand over (a
/// channels_redis reader's `$inflight` backup), with the original scores.
async fn restore_inflight(
    conn: &mut MultiplexedConnection,
    queue: &str,
    inflight: &str,
) -> Result<(), LayerError> {
    let restored: i64 = scripts::RESTORE_INFLIGHT
        .key(queue)
        .key(inflight)
        .invoke_async(conn)
        .await
        .map_err(unavailable)?;
    if restored > 0 {
        tracing::info!(queue, restored, "messages restored from $inflight");
    }
    Ok(())
}

/// Waits for messages and hands them to their local channels in the same
/// step: the pop's reply is the hand-over, so a message is delivered one
/// round trip after it was queued, and nothing needs a backup meanwhile.
async fn receive_batch(
    inner: &Inner,
    conn: &mut MultiplexedConnection,
    queue: &str,
    pop: &mut Pop,
    whole_until: &mut f64,
) -> Result<usize, LayerError> {
    let members: Vec<Vec<u8>> = if *pop == Pop::Batch {
        let reply: redis::RedisResult<Option<Popped>> = redis::cmd("BZMPOP")
            .arg(POP_TIMEOUT_SECS)
            .arg(1)
            .arg(queue)
            .arg("MIN")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await;
        match reply {
            Ok(popped) => popped.map(|(_, batch)| batch.into_iter().map(|(m, _)| m).collect()),
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                tracing::info!(queue, %error, "BZMPOP unavailable (Redis < 7); popping one at a time");
                *pop = Pop::One;
                return Ok(0);
            }
            Err(error) => return Err(unavailable(error)),
        }
        .unwrap_or_default()
    } else {
        let popped: Option<(Vec<u8>, Vec<u8>, f64)> = redis::cmd("BZPOPMIN")
            .arg(queue)
            .arg(POP_TIMEOUT_SECS)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        popped
            .map(|(_, member, _)| vec![member])
            .unwrap_or_default()
    };
    let received = members.len();
    tracing::trace!(queue, batch = received, "received from Redis");
    if received > 0 && received >= inner.queue_capacity(queue) {
        // The queue held its capacity: senders may have dropped copies
        // since the last pop that found it below (herald's own publishers
        // hold theirs back; channels_redis's drop them).
        inner
            .local
            .resync_all("process queue at capacity", *whole_until);
    } else {
        *whole_until = crate::layer::wall_clock();
    }
    for member in members {
        match inner.codec.decode(&member) {
            Ok(message) => inner.dispatch(message, queue),
            Err(error) => tracing::warn!(queue, %error, "undecodable layer message dropped"),
        }
    }
    Ok(received)
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
        return Ok(message);
    }
}
