//! The channels of this process: bounded buffers that a Redis reader fills
//! and `receive` drains. Shared by both Redis layers.
//!
//! A channel that may have missed messages (its buffer was full, or the
//! layer lost Redis, or its queue key may have overflowed at the senders) is
//! marked lost with where the loss begins ([`Loss`]); its next `receive`
//! answers that loss's resync message before anything else, so the consumer
//! reads again from there instead of never knowing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::layer::{LayerError, Loss, Message};
use crate::mailbox::{Mailbox, Next};

/// One channel's buffer, with its lost mark.
type Local = Arc<Mailbox<Message>>;

pub(crate) struct LocalChannels {
    capacity: usize,
    channels: Mutex<HashMap<String, Local>>,
    /// Where each lost channel's loss begins, taken by its next receive.
    losses: Mutex<HashMap<String, Loss>>,
    dropped: AtomicU64,
}

impl LocalChannels {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            channels: Mutex::default(),
            losses: Mutex::default(),
            dropped: AtomicU64::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn create(&self, name: &str) {
        let local = Arc::new(Mailbox::new(self.capacity));
        self.map().insert(name.to_string(), local);
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }

    pub(crate) fn remove(&self, name: &str) {
        if let Some(local) = self.map().remove(name) {
            local.close();
        }
        crate::layer::lock(&self.losses).remove(name);
    }

    /// Records `loss` for `name` and marks its mailbox lost.
    fn lose(&self, name: &str, local: &Local, loss: Loss) {
        if loss.is_empty() {
            return;
        }
        crate::layer::lock(&self.losses)
            .entry(name.to_string())
            .or_default()
            .merge(loss);
        local.mark_lost();
    }

    /// Hands `message` to each named local channel; a full buffer drops
    /// its copy (counted, logged, and the channel marked lost from that
    /// notification's id), an unknown name is skipped.
    pub(crate) fn deliver<'a>(&self, names: impl IntoIterator<Item = &'a str>, message: &Message) {
        let map = self.map();
        for name in names {
            let Some(local) = map.get(name) else {
                continue;
            };
            if local.try_send(message.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::metrics::LAYER_DROPPED, "layer" => "redis")
                    .increment(1);
                let loss = Loss::of_dropped(message);
                tracing::warn!(
                    channel = name,
                    notification_id = loss.from_id,
                    "local channel buffer full; message dropped, channel told to resync"
                );
                self.lose(name, local, loss);
            }
        }
    }

    /// Marks every channel lost from `since` (epoch seconds): the layer may
    /// have missed messages for any of them from then on (`why` is logged).
    pub(crate) fn resync_all(&self, why: &str, since: f64) {
        let map = self.map();
        if map.is_empty() {
            return;
        }
        tracing::info!(channels = map.len(), why, since, "channels told to resync");
        for (name, local) in map.iter() {
            self.lose(name, local, Loss::since(since));
        }
    }

    /// Waits for the next message on a local channel; a lost mark answers
    /// its loss's resync message first.
    pub(crate) async fn receive(&self, name: &str) -> Result<Message, LayerError> {
        let local = self
            .map()
            .get(name)
            .cloned()
            .ok_or_else(|| LayerError::InvalidChannelName(name.to_string()))?;
        loop {
            match local.next().await {
                Some(Next::Item(message)) => return Ok(message),
                Some(Next::Lost) => {
                    let loss = crate::layer::lock(&self.losses).remove(name);
                    // None: a second mark whose loss the first resync took.
                    if let Some(loss) = loss {
                        return Ok(loss.resync_message());
                    }
                }
                None => return Err(LayerError::Closed),
            }
        }
    }

    /// Closes every channel: their receivers answer `Closed`.
    pub(crate) fn close_all(&self) {
        for local in self.map().values() {
            local.close();
        }
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
