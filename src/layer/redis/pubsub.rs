//! channels_redis's `RedisPubSubChannelLayer` on the wire: a group is the
//! Redis pub/sub channel `<prefix>__group__<group>`, a channel is
//! `<prefix><name prefix>.<hex>` (no `!`), and every send is one PUBLISH of
//! the plain msgpack message (no random prefix, no `__asgi_channel__`, no
//! capacity, no expiry: at most once, as upstream).
//!
//! Each host has one subscriber connection; when it drops, it reconnects
//! with backoff and subscribes again to every channel and group it had.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::codec::Codec;
use super::keys::consistent_hash;
use super::local::LocalChannels;
use super::shards::{Shard, backoff, shards_for, unavailable};
use crate::config::LayerSettings;
use crate::layer::names::{check_channel_name, check_group_name};
use crate::layer::{ChannelLayer, GroupSendReport, LayerError, Message, lock};

/// How long a subscribe waits for its host's subscriber connection.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);

struct Host {
    shard: Shard,
    /// The subscriber's command half, while connected.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    connected: watch::Sender<bool>,
    started: AtomicBool,
}

struct Inner {
    hosts: Vec<Host>,
    prefix: String,
    codec: Codec,
    local: LocalChannels,
    /// Redis pub/sub group channel -> local channels in it.
    groups: Mutex<HashMap<String, HashSet<String>>>,
    /// local channel -> groups it joined, so `close_channel` needs no scan.
    channel_groups: Mutex<HashMap<String, HashSet<String>>>,
    reconnects: AtomicU64,
    stop: CancellationToken,
}

/// channels_redis's `RedisPubSubChannelLayer` on the wire.
pub struct PubSubLayer {
    inner: Arc<Inner>,
}

impl PubSubLayer {
    pub fn new(settings: &LayerSettings) -> Result<Self, LayerError> {
        let hosts = shards_for(&settings.hosts)?
            .into_iter()
            .map(|shard| Host {
                shard,
                sink: tokio::sync::Mutex::new(None),
                connected: watch::Sender::new(false),
                started: AtomicBool::new(false),
            })
            .collect();
        let inner = Inner {
            hosts,
            prefix: settings.prefix.clone(),
            codec: Codec::for_pubsub(&settings.symmetric_encryption_keys),
            local: LocalChannels::new(settings.capacity),
            groups: Mutex::default(),
            channel_groups: Mutex::default(),
            reconnects: AtomicU64::new(0),
            stop: CancellationToken::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Times a subscriber connection was lost and made again.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    pub fn close(&self) {
        self.inner.stop.cancel();
        self.inner.local.close_all();
    }
}

impl Drop for PubSubLayer {
    fn drop(&mut self) {
        self.inner.stop.cancel();
        self.inner.local.close_all();
    }
}

impl Inner {
    fn group_channel(&self, group: &str) -> String {
        format!("{}__group__{group}", self.prefix)
    }

    fn host_for(&self, name: &str) -> usize {
        consistent_hash(name, self.hosts.len())
    }

    /// SUBSCRIBE or UNSUBSCRIBE on the host `name` hashes to, starting its
    /// subscriber and waiting for it to connect when needed.
    async fn subscription(self: &Arc<Self>, name: &str, on: bool) -> Result<(), LayerError> {
        let index = self.host_for(name);
        let host = &self.hosts[index];
        if !host.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(subscriber(self.clone(), index));
        }
        let mut connected = host.connected.subscribe();
        let wait = connected.wait_for(|up| *up);
        if tokio::time::timeout(SUBSCRIBE_WAIT, wait).await.is_err() {
            return Err(LayerError::Unavailable(
                "no subscriber connection to Redis".into(),
            ));
        }
        let mut sink = host.sink.lock().await;
        let Some(sink) = sink.as_mut() else {
            return Err(LayerError::Unavailable("subscriber connection lost".into()));
        };
        let result = if on {
            sink.subscribe(name).await
        } else {
            sink.unsubscribe(name).await
        };
        result.map_err(unavailable)
    }

    /// Everything this process listens to on host `index`.
    fn names_on(&self, index: usize, channels: &[String]) -> Vec<String> {
        let groups = lock(&self.groups).keys().cloned().collect::<Vec<_>>();
        channels
            .iter()
            .cloned()
            .chain(groups)
            .filter(|name| self.host_for(name) == index)
            .collect()
    }

    fn dispatch(&self, name: &str, payload: &[u8]) {
        let message = match self.codec.decode(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(channel = name, %error, "undecodable pub/sub message dropped");
                return;
            }
        };
        if self.local.contains(name) {
            self.local.deliver([name], &message);
            return;
        }
        let members: Vec<String> = lock(&self.groups)
            .get(name)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        self.local
            .deliver(members.iter().map(String::as_str), &message);
    }
}

/// Keeps host `index`'s subscriber connected and dispatches its messages.
async fn subscriber(inner: Arc<Inner>, index: usize) {
    let mut failures: u32 = 0;
    // When the subscription was last known whole: a resubscribe resyncs
    // the channels from then on.
    let mut whole_until = crate::layer::wall_clock();
    while !inner.stop.is_cancelled() {
        match serve(&inner, index, failures, whole_until).await {
            Ok(()) => {
                failures = 1; // was up, then lost: retry soon
                whole_until = crate::layer::wall_clock();
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(host = index, %error, "pub/sub subscriber failed; reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(failures)) => {}
            () = inner.stop.cancelled() => return,
        }
    }
}

/// One subscriber connection's life: subscribe to everything this process
/// listens to on the host, then dispatch until the connection ends.
async fn serve(
    inner: &Inner,
    index: usize,
    failures: u32,
    whole_until: f64,
) -> Result<(), LayerError> {
    let host = &inner.hosts[index];
    let (mut sink, mut stream) = host.shard.pubsub().await?.split();
    let names = inner.names_on(index, &inner.local.names());
    if !names.is_empty() {
        sink.subscribe(&names).await.map_err(unavailable)?;
    }
    if failures > 0 {
        inner.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::metrics::LAYER_RECONNECTS, "layer" => "redis_pubsub")
            .increment(1);
        tracing::warn!(
            host = index,
            resubscribed = names.len(),
            "pub/sub layer reconnected to Redis"
        );
        // Whatever was published while unsubscribed is gone (pub/sub keeps
        // nothing): the channels' consumers read it from the database.
        inner
            .local
            .resync_all("pub/sub subscription restored", whole_until);
    }
    *host.sink.lock().await = Some(sink);
    host.connected.send_replace(true);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => inner.dispatch(message.get_channel_name(), message.get_payload_bytes()),
                None => break,
            },
            () = inner.stop.cancelled() => break,
        }
    }
    host.connected.send_replace(false);
    *host.sink.lock().await = None;
    Ok(())
}

#[async_trait]
impl ChannelLayer for PubSubLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        let name = format!(
            "{}{prefix}.{}",
            self.inner.prefix,
            uuid::Uuid::new_v4().simple()
        );
        check_channel_name(&name)?;
        self.inner.local.create(&name);
        if let Err(error) = self.inner.subscription(&name, true).await {
            self.inner.local.remove(&name);
            return Err(error);
        }
        Ok(name)
    }

    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        check_channel_name(channel)?;
        self.publish(channel, &message).await.map(|_| ())
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        // Closing the layer closes its channels, which ends this wait.
        if self.inner.stop.is_cancelled() {
            return Err(LayerError::Closed);
        }
        self.inner.local.receive(channel).await
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        check_group_name(group)?;
        if !self.inner.local.contains(channel) {
            return Err(LayerError::InvalidChannelName(channel.to_string()));
        }
        let name = self.inner.group_channel(group);
        let first = {
            let mut groups = lock(&self.inner.groups);
            let members = groups.entry(name.clone()).or_default();
            members.insert(channel.to_string());
            members.len() == 1
        };
        lock(&self.inner.channel_groups)
            .entry(channel.to_string())
            .or_default()
            .insert(group.to_string());
        if first {
            self.inner.subscription(&name, true).await?;
        }
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        check_group_name(group)?;
        let name = self.inner.group_channel(group);
        let emptied = {
            let mut groups = lock(&self.inner.groups);
            match groups.get_mut(&name) {
                Some(members) => {
                    members.remove(channel);
                    let empty = members.is_empty();
                    if empty {
                        groups.remove(&name);
                    }
                    empty
                }
                None => false,
            }
        };
        {
            let mut channel_groups = lock(&self.inner.channel_groups);
            if let Some(groups) = channel_groups.get_mut(channel) {
                groups.remove(group);
                if groups.is_empty() {
                    channel_groups.remove(channel);
                }
            }
        }
        if emptied {
            self.inner.subscription(&name, false).await?;
        }
        Ok(())
    }

    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        check_group_name(group)?;
        let receivers = self
            .publish(&self.inner.group_channel(group), &message)
            .await?;
        Ok(GroupSendReport {
            delivered: receivers,
            ..GroupSendReport::default()
        })
    }

    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        let groups: Vec<String> = lock(&self.inner.channel_groups)
            .get(channel)
            .map(|groups| groups.iter().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.group_discard(&group, channel).await?;
        }
        self.inner.local.remove(channel);
        self.inner.subscription(channel, false).await
    }
}

impl PubSubLayer {
    /// PUBLISH on the host the name hashes to; returns how many subscribers
    /// (processes) got it.
    async fn publish(&self, name: &str, message: &Message) -> Result<usize, LayerError> {
        let payload = self.inner.codec.encode(message)?;
        let host = &self.inner.hosts[self.inner.host_for(name)];
        let mut conn = host.shard.conn().await?;
        redis::cmd("PUBLISH")
            .arg(name)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}
