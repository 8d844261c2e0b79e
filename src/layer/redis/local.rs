//! The channels of this process: bounded buffers that a Redis reader fills
//! and `receive` drains. Shared by both Redis layers.
//!
//! A channel that may have missed messages (its buffer was full, or the
//! layer lost Redis, or its queue key may have overflowed at the senders) is
//! marked lost; its next `receive` answers [`resync_message`] before
//! anything else, so the consumer can read what it missed from the
//! database instead of never knowing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::layer::{LayerError, Message, resync_message};
use crate::mailbox::{Mailbox, Next};

/// One channel's buffer, with its lost mark.
type Local = Arc<Mailbox<Message>>;

pub(crate) struct LocalChannels {
    capacity: usize,
    channels: Mutex<HashMap<String, Local>>,
    dropped: AtomicU64,
}

impl LocalChannels {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            channels: Mutex::default(),
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
    }

    /// Hands `message` to each named local channel; a full buffer drops
    /// its copy (counted, logged, and the channel marked lost), an unknown
    /// name is skipped.
    pub(crate) fn deliver<'a>(&self, names: impl IntoIterator<Item = &'a str>, message: &Message) {
        let map = self.map();
        for name in names {
            let Some(local) = map.get(name) else {
                continue;
            };
            if local.try_send(message.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                local.mark_lost();
                tracing::warn!(
                    channel = name,
                    "local channel buffer full; message dropped, channel told to resync"
                );
            }
        }
    }

    /// Marks every channel lost: the layer may have missed messages for any
    /// of them (`why` is logged).
    pub(crate) fn resync_all(&self, why: &str) {
        let map = self.map();
        if map.is_empty() {
            return;
        }
        tracing::info!(channels = map.len(), why, "channels told to resync");
        for local in map.values() {
            local.mark_lost();
        }
    }

    /// Waits for the next message on a local channel; a lost mark answers
    /// [`resync_message`] first.
    pub(crate) async fn receive(&self, name: &str) -> Result<Message, LayerError> {
        let local = self
            .map()
            .get(name)
            .cloned()
            .ok_or_else(|| LayerError::InvalidChannelName(name.to_string()))?;
        match local.next().await {
            Some(Next::Item(message)) => Ok(message),
            Some(Next::Lost) => Ok(resync_message()),
            None => Err(LayerError::Closed),
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
