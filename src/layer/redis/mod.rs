//! Channel layers over Redis, byte-compatible with channels_redis 4.x:
//! [`RedisLayer`] speaks `RedisChannelLayer`'s sorted sets, and
//! [`pubsub::PubSubLayer`] its `RedisPubSubChannelLayer`.
//!
//! Parts: `keys` (names, sharding), `codec` (bytes), `scripts` (Lua),
//! `shards` (connections), `receiver` (the one receive loop per process and
//! the memberships it keeps alive), `held` (copies held back for a full
//! queue instead of dropped), and the operations here.

pub mod codec;
mod held;
pub mod keys;

mod group_send;
mod local;
pub mod pubsub;
mod receiver;
mod scripts;
mod shards;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::codec::Codec;
use self::group_send::{deliver, group_members};
use self::keys::{consistent_hash, group_key, queue_key};
use self::local::LocalChannels;
use self::shards::{Shard, shards_for, unavailable};
use super::names::{Capacities, check_channel_name, check_group_name, non_local_name};
use super::{ChannelLayer, GroupSendReport, LayerError, Message, lock};
use crate::config::LayerSettings;

/// The key channels_redis reserves for the target channel name(s).
pub const ASGI_CHANNEL: &str = "__asgi_channel__";

/// Wall-clock seconds, as Python's `time.time()`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `int(time.time()) - seconds`: the score at or below which entries expire.
fn cutoff(seconds: u64) -> i64 {
    now() as i64 - seconds as i64
}

pub(crate) struct Inner {
    shards: Vec<Shard>,
    prefix: String,
    expiry: u64,
    group_expiry: u64,
    capacities: Capacities,
    codec: Codec,
    /// `specific.<client_prefix>!...`: one random id per layer instance.
    client_prefix: String,
    local: LocalChannels,
    /// group -> local channels in it, to renew and restore memberships.
    memberships: Mutex<HashMap<String, HashSet<String>>>,
    /// local channel -> groups it joined: `close_channel` looks its groups
    /// up here instead of scanning every group (thousands of connections
    /// closing at once made that scan quadratic).
    channel_groups: Mutex<HashMap<String, HashSet<String>>>,
    /// Non-local names (`specific.<id>!`) whose queues the receive loop reads.
    readers: Mutex<HashSet<String>>,
    round_robin: AtomicUsize,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    /// Set while the receive loop has lost Redis, until memberships are
    /// restored: this process's own groups may be empty in Redis.
    restoring: std::sync::atomic::AtomicBool,
    /// Group copies held back for full queues, and their placing task.
    held: held::Held,
    stop: CancellationToken,
}

/// channels_redis's `RedisChannelLayer` on the wire.
pub struct RedisLayer {
    inner: Arc<Inner>,
}

impl RedisLayer {
    pub fn new(settings: &LayerSettings) -> Result<Self, LayerError> {
        let inner = Inner {
            shards: shards_for(&settings.hosts)?,
            prefix: settings.prefix.clone(),
            expiry: settings.expiry,
            group_expiry: settings.group_expiry,
            capacities: Capacities::new(settings.capacity, &settings.channel_capacity)?,
            codec: Codec::for_queues(&settings.symmetric_encryption_keys, settings.expiry),
            client_prefix: uuid::Uuid::new_v4().simple().to_string(),
            local: LocalChannels::new(settings.capacity),
            memberships: Mutex::default(),
            channel_groups: Mutex::default(),
            readers: Mutex::default(),
            round_robin: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            restoring: std::sync::atomic::AtomicBool::new(false),
            held: held::Held::new(settings.full_channel_deadline),
            stop: CancellationToken::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Times the receive loop lost Redis and reconnected.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Messages dropped: group copies over capacity (undelivered at the
    /// deadline when holding is on), and messages for a local channel
    /// whose buffer was full.
    pub fn dropped_total(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed) + self.inner.local.dropped()
    }

    /// Group copies held back for a full queue since start.
    pub fn held_total(&self) -> u64 {
        self.inner.held.held_total()
    }

    /// Held copies given up at `full_channel_deadline` since start.
    pub fn undelivered_total(&self) -> u64 {
        self.inner.held.undelivered_total()
    }

    /// Group copies held now, waiting for room.
    pub fn held_now(&self) -> usize {
        self.inner.held.waiting()
    }

    /// Stops the receive loop and membership renewal.
    pub fn close(&self) {
        self.inner.stop.cancel();
        self.inner.local.close_all();
    }
}

impl Drop for RedisLayer {
    fn drop(&mut self) {
        self.inner.stop.cancel();
        self.inner.local.close_all();
    }
}

impl Inner {
    fn shard_for(&self, name: &str) -> usize {
        consistent_hash(name, self.shards.len())
    }

    /// The capacity senders use for the process queue key `queue`.
    fn queue_capacity(&self, queue: &str) -> usize {
        let non_local = queue.strip_prefix(self.prefix.as_str()).unwrap_or(queue);
        self.capacities.for_channel(non_local)
    }

    fn next_shard(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    /// Adds `channel` to `group` in Redis (score now, TTL group_expiry).
    async fn add_membership(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        let mut conn = self.shards[self.shard_for(group)].conn().await?;
        redis::pipe()
            .atomic()
            .zadd(group_key(&self.prefix, group), channel, now())
            .ignore()
            .expire(group_key(&self.prefix, group), self.group_expiry as i64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Hands a message from the process queue to the local channel(s) its
    /// `__asgi_channel__` names; a full buffer drops it, counted and logged.
    fn dispatch(&self, mut message: Message, queue: &str) {
        let targets = match message.remove(ASGI_CHANNEL) {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(many)) => many
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => {
                tracing::warn!(queue, "message without __asgi_channel__ dropped");
                return;
            }
        };
        self.local
            .deliver(targets.iter().map(String::as_str), &message);
    }
}

#[async_trait]
impl ChannelLayer for RedisLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let inner = &self.inner;
        let name = format!(
            "{prefix}.{}!{}",
            inner.client_prefix,
            uuid::Uuid::new_v4().simple()
        );
        check_channel_name(&name)?;
        inner.local.create(&name);
        receiver::ensure_reader(inner, non_local_name(&name));
        Ok(name)
    }

    async fn send(&self, channel: &str, mut message: Message) -> Result<(), LayerError> {
        let inner = &self.inner;
        check_channel_name(channel)?;
        if message.contains_key(ASGI_CHANNEL) {
            return Err(LayerError::InvalidMessage(format!(
                "{ASGI_CHANNEL} is reserved"
            )));
        }
        // A process-local channel: its queue is on the shard of its
        // non-local name, where its reader pops (see docs/operations.md on
        // channels_redis hashing the full name here).
        let shard = if channel.contains('!') {
            message.insert(ASGI_CHANNEL.into(), Value::String(channel.into()));
            inner.shard_for(non_local_name(channel))
        } else {
            inner.next_shard()
        };
        let member = inner.codec.encode(&message)?;
        let mut conn = inner.shards[shard].conn().await?;
        let added: i64 = scripts::SEND
            .key(queue_key(&inner.prefix, channel))
            .arg(member)
            .arg(now())
            .arg(cutoff(inner.expiry))
            .arg(inner.capacities.for_channel(channel))
            .arg(inner.expiry)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if added == 1 {
            Ok(())
        } else {
            Err(LayerError::ChannelFull(channel.to_string()))
        }
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        check_channel_name(channel)?;
        if !channel.contains('!') {
            // Boxed: its Redis futures would otherwise be laid out in every
            // local channel's wait, which is what nearly all calls are.
            return Box::pin(receiver::receive_general(&self.inner, channel)).await;
        }
        // Closing the layer closes its channels, which ends this wait.
        if self.inner.stop.is_cancelled() {
            return Err(LayerError::Closed);
        }
        self.inner.local.receive(channel).await
    }

    /// A local channel's membership is recorded before Redis is asked, so a
    /// failed call is restored with the others when Redis is back.
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        check_group_name(group)?;
        check_channel_name(channel)?;
        if self.inner.local.contains(channel) {
            let mut memberships = lock(&self.inner.memberships);
            memberships
                .entry(group.to_string())
                .or_default()
                .insert(channel.to_string());
            drop(memberships);
            lock(&self.inner.channel_groups)
                .entry(channel.to_string())
                .or_default()
                .insert(group.to_string());
        }
        self.inner.add_membership(group, channel).await
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        check_group_name(group)?;
        check_channel_name(channel)?;
        {
            let mut memberships = lock(&self.inner.memberships);
            if let Some(members) = memberships.get_mut(group) {
                members.remove(channel);
                if members.is_empty() {
                    memberships.remove(group);
                }
            }
            drop(memberships);
            let mut channel_groups = lock(&self.inner.channel_groups);
            if let Some(groups) = channel_groups.get_mut(channel) {
                groups.remove(group);
                if groups.is_empty() {
                    channel_groups.remove(channel);
                }
            }
        }
        let inner = &self.inner;
        let mut conn = inner.shards[inner.shard_for(group)].conn().await?;
        redis::cmd("ZREM")
            .arg(group_key(&inner.prefix, group))
            .arg(channel)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        let mut answers = self
            .group_send_many(vec![(group.to_string(), message)])
            .await;
        answers.remove(0)
    }

    /// One script call per shard lists the members of every group; then
    /// each message goes to its group's members as `group_send` would.
    async fn group_send_many(
        &self,
        sends: Vec<(String, Message)>,
    ) -> Vec<Result<GroupSendReport, LayerError>> {
        use futures_util::StreamExt;
        let inner = &self.inner;
        if inner.restoring.load(Ordering::Acquire) && !lock(&inner.memberships).is_empty() {
            // This process's own members may be missing from Redis: a send
            // now could reach nobody; the outbox tries again later.
            let error = LayerError::Unavailable("group memberships are being restored".into());
            return sends.iter().map(|_| Err(error.clone())).collect();
        }
        let members = group_members(inner, &sends).await;
        futures_util::stream::iter(sends.into_iter().zip(members))
            .map(|((group, message), members)| async move {
                let report = deliver(inner, &group, &members?, &message).await?;
                if report.held > 0 {
                    tracing::debug!(
                        group,
                        held = report.held,
                        "group_send: queues full, copies held"
                    );
                }
                if report.dropped > 0 {
                    metrics::counter!(crate::telemetry::metrics::LAYER_DROPPED, "layer" => "redis")
                        .increment(report.dropped as u64);
                    tracing::warn!(
                        group,
                        dropped = report.dropped,
                        "group_send: queues over capacity, copies dropped"
                    );
                }
                Ok(report)
            })
            .buffered(super::GROUP_SEND_CONCURRENCY)
            .collect()
            .await
    }

    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        self.inner.local.remove(channel);
        let groups: Vec<String> = lock(&self.inner.channel_groups)
            .get(channel)
            .map(|groups| groups.iter().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.group_discard(&group, channel).await?;
        }
        Ok(())
    }
}
