//! The channel layer: Django Channels' interface (new_channel, send, receive,
//! group_add, group_discard, group_send) as a trait, so the worker publishes
//! and the sidecar receives without knowing which implementation carries the
//! messages.

pub mod memory;
pub mod names;
pub mod redis;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use memory::MemoryLayer;
pub use redis::RedisLayer;
pub use redis::pubsub::PubSubLayer;

use std::sync::Arc;

use crate::config::{LayerBackend, LayerSettings};

/// The layer the configuration names. Redis layers connect lazily: building
/// one succeeds while Redis is down, and operations report `Unavailable`.
pub fn build(settings: &LayerSettings) -> Result<Arc<dyn ChannelLayer>, LayerError> {
    Ok(match settings.backend {
        LayerBackend::Memory => Arc::new(MemoryLayer::new(settings)?),
        LayerBackend::Redis => Arc::new(RedisLayer::new(settings)?),
        LayerBackend::RedisPubsub => Arc::new(PubSubLayer::new(settings)?),
    })
}

/// Locks a mutex, recovering it if a panicking thread poisoned it: the
/// layers' maps stay consistent between statements, so the data is usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Group sends [`ChannelLayer::group_send_many`] has in flight at once.
pub const GROUP_SEND_CONCURRENCY: usize = 64;

/// A layer message: a map with string keys, `type` naming the handler.
pub type Message = Map<String, Value>;

/// The `type` of the message [`ChannelLayer::receive`] answers on one of
/// herald's own channels when messages for it may have been lost (a full
/// buffer, Redis lost and memberships restored, a queue key at capacity):
/// the consumer reads what it missed from the database. Never sent over
/// Redis, so Python consumers never see it.
pub const RESYNC: &str = "herald.resync";

/// Where a channel's missed messages begin, as far as its layer knows: the
/// notification ids it dropped itself (a full buffer, an expired message:
/// each id while there are at most [`LOSS_IDS`], else the lowest), and the
/// earliest wall-clock time (epoch seconds) from which copies it never saw
/// may have been dropped (a sender that found the queue at capacity, Redis
/// lost). A [`RESYNC`] message carries it, so the consumer reads again what
/// it lacks of that, not from the newest id it was handed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loss {
    /// The lowest notification id dropped.
    pub from_id: Option<i64>,
    /// Every id dropped, while `from_id` alone does not have to stand for
    /// them (at most [`LOSS_IDS`]).
    pub ids: Vec<i64>,
    /// More ids were dropped than `ids` keeps: everything from `from_id` on.
    pub overflow: bool,
    pub since: Option<f64>,
}

/// Dropped ids one [`Loss`] names one by one.
pub const LOSS_IDS: usize = 1000;

impl Loss {
    /// Copies may have been dropped from `since` on.
    pub fn since(since: f64) -> Self {
        Self {
            since: Some(since),
            ..Self::default()
        }
    }

    /// What dropping `message` lost: its notification's id, or, for any
    /// other message, everything from now on (the consumer is told; what
    /// it can read again is the database's notifications).
    pub fn of_dropped(message: &Message) -> Self {
        let id = (message.get("type").and_then(Value::as_str) == Some("send_notification"))
            .then(|| message.get("data").and_then(|data| data.get("id")))
            .flatten()
            .and_then(Value::as_i64);
        match id {
            Some(id) => Self {
                from_id: Some(id),
                ids: vec![id],
                ..Self::default()
            },
            None => Self::since(wall_clock()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.from_id.is_none() && self.since.is_none()
    }

    /// Both losses: every id (or the lower one), the earlier time.
    pub fn merge(&mut self, other: Loss) {
        self.from_id = match (self.from_id, other.from_id) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.overflow |= other.overflow;
        self.ids.extend(other.ids);
        if self.overflow || self.ids.len() > LOSS_IDS {
            self.overflow = true;
            self.ids = Vec::new();
        }
    }

    /// The [`RESYNC`] message telling a consumer about this loss.
    pub fn resync_message(&self) -> Message {
        let mut message = Message::new();
        message.insert("type".into(), Value::String(RESYNC.into()));
        if let Some(id) = self.from_id {
            message.insert("from_id".into(), Value::from(id));
            if !self.overflow {
                message.insert("ids".into(), Value::from(self.ids.clone()));
            }
        }
        if let Some(since) = self.since {
            message.insert("since".into(), Value::from(since));
        }
        message
    }

    /// The loss a [`RESYNC`] message carries.
    pub fn of_resync(message: &Message) -> Self {
        let ids: Option<Vec<i64>> = message
            .get("ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect());
        let from_id = message.get("from_id").and_then(Value::as_i64);
        Self {
            from_id,
            overflow: from_id.is_some() && ids.is_none(),
            ids: ids.unwrap_or_default(),
            since: message.get("since").and_then(Value::as_f64),
        }
    }
}

/// Wall-clock seconds since the epoch, as Python's `time.time()`.
pub fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerError {
    /// `send` to a channel holding its capacity of messages.
    #[error("channel {0} is full")]
    ChannelFull(String),
    #[error(
        "invalid channel name {0:?}: letters, digits, '-', '_', '.' and one '!', under 100 characters"
    )]
    InvalidChannelName(String),
    #[error("invalid group name {0:?}: letters, digits, '-', '_' and '.', under 100 characters")]
    InvalidGroupName(String),
    /// A message that cannot be encoded or decoded (bytes values, a
    /// reserved key, a foreign or undecryptable payload).
    #[error("invalid layer message: {0}")]
    InvalidMessage(String),
    #[error("channel layer configuration: {0}")]
    Config(String),
    /// The backing service cannot be reached; the caller may retry.
    #[error("channel layer unavailable: {0}")]
    Unavailable(String),
    #[error("the channel layer is closed")]
    Closed,
}

/// What a `group_send` did: copies handed to channels, copies held back
/// because their channel was at capacity (placed later, in order, or
/// counted as undelivered at `layer.full_channel_deadline`), and
/// copies dropped at once (a layer that holds nothing back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSendReport {
    pub delivered: usize,
    pub held: usize,
    pub dropped: usize,
}

/// Django Channels' channel layer interface.
#[async_trait]
pub trait ChannelLayer: Send + Sync + 'static {
    /// A new process-local channel name, `<prefix>.<...>!<id>`.
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError>;
    /// Queues `message` on `channel`; fails with `ChannelFull` at capacity.
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError>;
    /// Waits for the next message on `channel`. On a channel of this
    /// process that may have missed messages, answers a [`RESYNC`] message
    /// first.
    async fn receive(&self, channel: &str) -> Result<Message, LayerError>;
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError>;
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError>;
    /// Sends to every member; a full member's copy is held back and
    /// retried (Redis) or dropped and its channel told to resync (memory),
    /// never an error.
    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError>;
    /// [`group_send`](Self::group_send) of many messages, answering in
    /// their order. A layer that can does it in fewer round trips; this
    /// default sends them in turn, [`GROUP_SEND_CONCURRENCY`] at once. Not
    /// part of Django's interface.
    async fn group_send_many(
        &self,
        sends: Vec<(String, Message)>,
    ) -> Vec<Result<GroupSendReport, LayerError>> {
        use futures_util::StreamExt;
        futures_util::stream::iter(sends)
            .map(|(group, message)| async move { self.group_send(&group, message).await })
            .buffered(GROUP_SEND_CONCURRENCY)
            .collect()
            .await
    }
    /// Forgets a channel this process made: its buffer and memberships.
    /// Not part of Django's interface; connections call it when they close.
    async fn close_channel(&self, channel: &str) -> Result<(), LayerError>;
}
