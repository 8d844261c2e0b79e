//! The in-memory channel layer: channels' `InMemoryChannelLayer` semantics
//! for one process (per-channel capacity, message expiry, group expiry).
//! `herald run` uses it when worker and sidecar share the process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::names::{Capacities, check_channel_name, check_group_name};
use super::{ChannelLayer, GroupSendReport, LayerError, Loss, Message};
use crate::config::LayerSettings;

/// How often the whole-layer sweep of idle channels and stale groups runs.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One channel's queue of (expires at, message) and its waiting receivers.
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<(Instant, Message)>>,
    ready: Notify,
    /// A group copy was dropped (full) or a message expired unread: the
    /// next receive answers this loss's resync message first.
    loss: Mutex<Loss>,
}

impl Queue {
    fn items(&self) -> MutexGuard<'_, VecDeque<(Instant, Message)>> {
        self.items
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records what dropping `messages` lost and wakes the receiver.
    fn lose<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) {
        let mut loss = super::lock(&self.loss);
        for message in messages {
            loss.merge(Loss::of_dropped(message));
        }
        drop(loss);
        self.ready.notify_one();
    }
}

#[derive(Default)]
struct State {
    channels: HashMap<String, Arc<Queue>>,
    /// group -> channel -> when it joined
    groups: HashMap<String, HashMap<String, Instant>>,
    /// channel -> groups it joined, so closing a channel is cheap.
    joined: HashMap<String, std::collections::HashSet<String>>,
    last_sweep: Option<Instant>,
}

impl State {
    /// Removes `channel` from `group`, dropping the group when empty.
    fn leave(&mut self, group: &str, channel: &str) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(channel);
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
    }
}

pub struct MemoryLayer {
    state: Mutex<State>,
    expiry: Duration,
    group_expiry: Duration,
    capacities: Capacities,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl MemoryLayer {
    pub fn new(settings: &LayerSettings) -> Result<Self, LayerError> {
        Ok(Self {
            state: Mutex::default(),
            expiry: Duration::from_secs(settings.expiry),
            group_expiry: Duration::from_secs(settings.group_expiry),
            capacities: Capacities::new(settings.capacity, &settings.channel_capacity)?,
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        })
    }

    /// Group copies dropped on full channels since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Refuses every further operation and wakes every waiting receiver,
    /// which then returns `LayerError::Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for queue in self.state().channels.values() {
            queue.ready.notify_waiters();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn check_open(&self) -> Result<(), LayerError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(LayerError::Closed)
        } else {
            Ok(())
        }
    }

    fn queue(&self, channel: &str) -> Arc<Queue> {
        let mut state = self.state();
        self.sweep_if_due(&mut state);
        state
            .channels
            .entry(channel.to_string())
            .or_default()
            .clone()
    }

    /// Drops idle empty channels and stale memberships, at most once per
    /// [`SWEEP_EVERY`], so memory follows the live channels.
    fn sweep_if_due(&self, state: &mut State) {
        let now = Instant::now();
        if state.last_sweep.is_some_and(|at| now - at < SWEEP_EVERY) {
            return;
        }
        state.last_sweep = Some(now);
        state.channels.retain(|_, queue| {
            let mut items = queue.items();
            let expired = drop_expired(&mut items, now);
            if !expired.is_empty() {
                queue.lose(&expired);
            }
            !items.is_empty() || Arc::strong_count(queue) > 1
        });
        let group_expiry = self.group_expiry;
        let State { groups, joined, .. } = state;
        groups.retain(|_, members| {
            members.retain(|_, at| now - *at < group_expiry);
            !members.is_empty()
        });
        joined.retain(|channel, names| {
            names.retain(|group| groups.get(group).is_some_and(|m| m.contains_key(channel)));
            !names.is_empty()
        });
    }

    /// Live members of `group`, pruning those older than group_expiry.
    fn members(&self, group: &str) -> Vec<String> {
        let mut state = self.state();
        let now = Instant::now();
        let Some(members) = state.groups.get_mut(group) else {
            return Vec::new();
        };
        members.retain(|_, joined| now - *joined < self.group_expiry);
        members.keys().cloned().collect()
    }
}

/// Drops the messages past their expiry, answering them.
fn drop_expired(items: &mut VecDeque<(Instant, Message)>, now: Instant) -> Vec<Message> {
    let mut expired = Vec::new();
    while items.front().is_some_and(|(expires, _)| *expires <= now) {
        if let Some((_, message)) = items.pop_front() {
            expired.push(message);
        }
    }
    expired
}

#[async_trait]
impl ChannelLayer for MemoryLayer {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        self.check_open()?;
        let id: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        let name = format!("{prefix}.inmemory!{id}");
        check_channel_name(&name)?;
        Ok(name)
    }

    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        self.check_open()?;
        check_channel_name(channel)?;
        let queue = self.queue(channel);
        let now = Instant::now();
        {
            let mut items = queue.items();
            let expired = drop_expired(&mut items, now);
            if !expired.is_empty() {
                queue.lose(&expired);
            }
            if items.len() >= self.capacities.for_channel(channel) {
                return Err(LayerError::ChannelFull(channel.to_string()));
            }
            items.push_back((now + self.expiry, message));
        }
        queue.ready.notify_one();
        Ok(())
    }

    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        check_channel_name(channel)?;
        let queue = self.queue(channel);
        loop {
            let ready = queue.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            self.check_open()?;
            {
                let mut items = queue.items();
                let expired = drop_expired(&mut items, Instant::now());
                let mut loss = std::mem::take(&mut *super::lock(&queue.loss));
                for message in &expired {
                    loss.merge(Loss::of_dropped(message));
                }
                if !loss.is_empty() {
                    if !items.is_empty() {
                        queue.ready.notify_one();
                    }
                    return Ok(loss.resync_message());
                }
                if let Some((_, message)) = items.pop_front() {
                    if !items.is_empty() {
                        queue.ready.notify_one();
                    }
                    return Ok(message);
                }
            }
            ready.await;
        }
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.check_open()?;
        check_group_name(group)?;
        check_channel_name(channel)?;
        let mut state = self.state();
        let members = state.groups.entry(group.to_string()).or_default();
        members.insert(channel.to_string(), Instant::now());
        state
            .joined
            .entry(channel.to_string())
            .or_default()
            .insert(group.to_string());
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.check_open()?;
        check_group_name(group)?;
        check_channel_name(channel)?;
        let mut state = self.state();
        state.leave(group, channel);
        if let Some(groups) = state.joined.get_mut(channel) {
            groups.remove(group);
            if groups.is_empty() {
                state.joined.remove(channel);
            }
        }
        Ok(())
    }

    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        self.check_open()?;
        check_group_name(group)?;
        let mut report = GroupSendReport::default();
        for channel in self.members(group) {
            match self.send(&channel, message.clone()).await {
                Ok(()) => report.delivered += 1,
                Err(LayerError::ChannelFull(_)) => {
                    report.dropped += 1;
                    self.queue(&channel).lose([&message]);
                }
                Err(other) => return Err(other),
            }
        }
        if report.dropped > 0 {
            metrics::counter!(crate::telemetry::metrics::LAYER_DROPPED, "layer" => "memory")
                .increment(report.dropped as u64);
            self.dropped
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
            tracing::warn!(
                group,
                dropped = report.dropped,
                "group_send: channels over capacity"
            );
        }
        Ok(report)
    }

    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        let mut state = self.state();
        state.channels.remove(channel);
        for group in state.joined.remove(channel).unwrap_or_default() {
            state.leave(&group, channel);
        }
        Ok(())
    }
}
