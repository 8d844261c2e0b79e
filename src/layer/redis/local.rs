//! The channels of this process: bounded buffers that a Redis reader fills
//! and `receive` drains. Shared by both Redis layers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::layer::{LayerError, Message};

type Receiver = Arc<tokio::sync::Mutex<mpsc::Receiver<Message>>>;

pub(crate) struct LocalChannels {
    capacity: usize,
    channels: Mutex<HashMap<String, (mpsc::Sender<Message>, Receiver)>>,
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

    fn map(&self) -> MutexGuard<'_, HashMap<String, (mpsc::Sender<Message>, Receiver)>> {
        self.channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn create(&self, name: &str) {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.map().insert(
            name.to_string(),
            (tx, Arc::new(tokio::sync::Mutex::new(rx))),
        );
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }

    pub(crate) fn remove(&self, name: &str) {
        self.map().remove(name);
    }

    /// Hands `message` to each named local channel; a full buffer drops
    /// its copy (counted and logged), an unknown name is skipped.
    pub(crate) fn deliver<'a>(&self, names: impl IntoIterator<Item = &'a str>, message: &Message) {
        let map = self.map();
        for name in names {
            let Some((tx, _)) = map.get(name) else {
                continue;
            };
            if tx.try_send(message.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = name, "local channel buffer full; message dropped");
            }
        }
    }

    /// Waits for the next message on a local channel.
    pub(crate) async fn receive(&self, name: &str) -> Result<Message, LayerError> {
        let rx = self
            .map()
            .get(name)
            .map(|(_, rx)| rx.clone())
            .ok_or_else(|| LayerError::InvalidChannelName(name.to_string()))?;
        let mut rx = rx.lock().await;
        rx.recv().await.ok_or(LayerError::Closed)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
