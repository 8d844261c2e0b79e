//! Backpressure instead of drops: a group copy that finds its queue at
//! capacity (a consumer reading slower than herald publishes) is held here
//! and placed later, in the order Redis refused it, while other queues'
//! copies go on at once. A copy still unplaced at `full_channel_deadline`
//! belongs to a consumer that is gone or stuck: it is counted and logged
//! as undelivered, with its group and notification id.
//!
//! Order: while this layer instance holds copies for a queue, its hold key
//! exists in Redis and numbers every later copy the GROUP_SEND script
//! refuses, so no live copy overtakes a held one; the last placement drops
//! the key. The capacity still bounds what waits in Redis for a consumer
//! that went away, as channels_redis intends; what waits here is bounded by
//! the deadline and [`MAX_HELD_PER_QUEUE`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::keys::held_key;
use super::shards::unavailable;
use super::{Inner, cutoff, now, scripts};
use crate::layer::{LayerError, lock};
use crate::telemetry::metrics as m;

/// Copies one queue may have held at once; past it a copy is undelivered
/// at once (a consumer that has been gone for a while at a high rate).
pub(super) const MAX_HELD_PER_QUEUE: usize = 50_000;
/// Copies one placement call offers.
const PLACE_BATCH: usize = 512;
/// First and longest wait between tries on a queue that took nothing.
const FIRST_WAIT: Duration = Duration::from_millis(5);
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// One held copy and what its log line names.
pub(super) struct HeldCopy {
    pub(super) member: Vec<u8>,
    pub(super) group: String,
    pub(super) notification_id: Option<i64>,
}

struct Waiting {
    copy: HeldCopy,
    since: Instant,
}

/// The copies held for one queue key, by the number Redis gave them.
struct Queue {
    shard: usize,
    capacity: usize,
    copies: BTreeMap<i64, Waiting>,
    /// The highest number Redis gave a copy for this queue.
    last: i64,
    next_try: Instant,
    wait: Duration,
}

/// Every queue's held copies, and the one task that places them.
pub(super) struct Held {
    /// How long a copy is held before it counts as undelivered; zero turns
    /// holding off (copies over capacity are dropped, as channels_redis does).
    pub(super) deadline: Duration,
    queues: std::sync::Mutex<HashMap<String, Queue>>,
    wake: Notify,
    placing: AtomicBool,
    held: AtomicU64,
    undelivered: AtomicU64,
}

impl Held {
    pub(super) fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            queues: std::sync::Mutex::default(),
            wake: Notify::new(),
            placing: AtomicBool::new(false),
            held: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        !self.deadline.is_zero()
    }

    /// Seconds the hold key outlives its last use: a holder that died
    /// leaves no mark that outlasts its copies' deadline.
    pub(super) fn key_lifetime(&self) -> u64 {
        self.deadline.as_secs() + 10
    }

    /// Copies held since start (each one placed later or undelivered).
    pub(super) fn held_total(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Copies given up at the deadline since start.
    pub(super) fn undelivered_total(&self) -> u64 {
        self.undelivered.load(Ordering::Relaxed)
    }

    /// Copies held now.
    pub(super) fn waiting(&self) -> usize {
        lock(&self.queues).values().map(|q| q.copies.len()).sum()
    }
}

/// Holds `copy` for `queue` under the number Redis gave it, and makes sure
/// the placing task runs.
pub(super) fn hold(
    inner: &Arc<Inner>,
    queue: &str,
    shard: usize,
    capacity: usize,
    number: i64,
    copy: HeldCopy,
) {
    let held = &inner.held;
    {
        let mut queues = lock(&held.queues);
        let waiting = queues.entry(queue.to_string()).or_insert_with(|| Queue {
            shard,
            capacity,
            copies: BTreeMap::new(),
            last: 0,
            next_try: Instant::now(),
            wait: FIRST_WAIT,
        });
        waiting.last = waiting.last.max(number);
        if waiting.copies.len() >= MAX_HELD_PER_QUEUE {
            drop(queues);
            give_up(inner, queue, &copy, "too many copies held for this queue");
            return;
        }
        waiting.copies.insert(
            number,
            Waiting {
                copy,
                since: Instant::now(),
            },
        );
    }
    held.held.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::LAYER_HELD).increment(1);
    if !held.placing.swap(true, Ordering::AcqRel) {
        tokio::spawn(place_until_empty(inner.clone()));
    } else {
        held.wake.notify_one();
    }
}

/// Counts and logs one copy that will never be placed.
fn give_up(inner: &Inner, queue: &str, copy: &HeldCopy, why: &'static str) {
    inner.held.undelivered.fetch_add(1, Ordering::Relaxed);
    inner.dropped.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::LAYER_UNDELIVERED).increment(1);
    metrics::counter!(m::LAYER_DROPPED, "layer" => "redis").increment(1);
    let user_id = copy
        .group
        .strip_prefix("notifications_")
        .and_then(|id| id.parse::<i64>().ok());
    tracing::warn!(
        queue,
        group = copy.group,
        user_id,
        notification_id = copy.notification_id,
        why,
        "group copy undelivered: its channel stayed full"
    );
}

/// The placing task: tries each queue when due, until nothing is held.
async fn place_until_empty(inner: Arc<Inner>) {
    loop {
        let due: Vec<String> = {
            let queues = lock(&inner.held.queues);
            let now = Instant::now();
            queues
                .iter()
                .filter(|(_, q)| q.next_try <= now)
                .map(|(key, _)| key.clone())
                .collect()
        };
        for queue in due {
            if let Err(error) = place(&inner, &queue).await {
                tracing::warn!(queue, %error, "placing held copies failed; trying again");
                back_off(&inner, &queue);
            }
        }
        let next = {
            let queues = lock(&inner.held.queues);
            if queues.is_empty() {
                inner.held.placing.store(false, Ordering::Release);
                return;
            }
            queues.values().map(|q| q.next_try).min()
        };
        let Some(next) = next else { continue };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = inner.held.wake.notified() => {}
            () = inner.stop.cancelled() => {
                let left = inner.held.waiting();
                if left > 0 {
                    tracing::warn!(copies = left, "layer closed with group copies still held");
                }
                return;
            }
        }
    }
}

/// Waits longer before the next try on `queue`.
fn back_off(inner: &Inner, queue: &str) {
    if let Some(q) = lock(&inner.held.queues).get_mut(queue) {
        q.wait = (q.wait * 2).min(LONGEST_WAIT);
        q.next_try = Instant::now() + q.wait;
    }
}

/// One try on `queue`: gives up the copies past the deadline, offers the
/// oldest of the rest, and forgets what Redis placed.
async fn place(inner: &Inner, queue: &str) -> Result<(), LayerError> {
    let (shard, capacity, last, members, expired) = {
        let mut queues = lock(&inner.held.queues);
        let Some(q) = queues.get_mut(queue) else {
            return Ok(());
        };
        let deadline = inner.held.deadline;
        let expired: Vec<i64> = q
            .copies
            .iter()
            .take_while(|(_, w)| w.since.elapsed() >= deadline)
            .map(|(number, _)| *number)
            .collect();
        let expired: Vec<HeldCopy> = expired
            .into_iter()
            .filter_map(|number| q.copies.remove(&number).map(|w| w.copy))
            .collect();
        let members: Vec<(i64, Vec<u8>)> = q
            .copies
            .iter()
            .take(PLACE_BATCH)
            .map(|(number, w)| (*number, w.copy.member.clone()))
            .collect();
        (q.shard, q.capacity, q.last, members, expired)
    };
    for copy in &expired {
        give_up(inner, queue, copy, "full past layer.full_channel_deadline");
    }
    let mut invocation = scripts::PLACE_HELD.prepare_invoke();
    invocation
        .key(queue)
        .key(held_key(queue, &inner.client_prefix))
        .arg(capacity)
        .arg(now())
        .arg(cutoff(inner.expiry))
        .arg(inner.expiry)
        .arg(last);
    for (_, member) in &members {
        invocation.arg(member);
    }
    let mut conn = inner.shards[shard].conn().await?;
    let placed: usize = invocation
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable)?;
    let mut queues = lock(&inner.held.queues);
    let Some(q) = queues.get_mut(queue) else {
        return Ok(());
    };
    for (number, _) in members.iter().take(placed) {
        q.copies.remove(number);
    }
    if q.copies.is_empty() && q.last == last && placed == members.len() {
        // Redis dropped the hold key with the last placement.
        queues.remove(queue);
        return Ok(());
    }
    if placed > 0 {
        q.wait = FIRST_WAIT;
        q.next_try = Instant::now();
    } else {
        q.wait = (q.wait * 2).min(LONGEST_WAIT);
        q.next_try = Instant::now() + q.wait;
    }
    Ok(())
}
