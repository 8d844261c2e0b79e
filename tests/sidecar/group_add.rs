//! A `group_add` that fails when a connection opens (Redis restarting, a
//! broken pipe): it is tried again for about three seconds, then the socket
//! is closed with 1011 "layer_unavailable" (docs/notifications.md) instead of
//! being left open outside its group, where it would hear nothing. The
//! JavaScript client's answer to that close (reconnect, resume from its last
//! id) is in js_client.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::layer::{ChannelLayer, GroupSendReport, LayerError, Message};
use herald::store::Backend;

use crate::harness::{Sidecar, as_event, connect, memory_layer, spawn_with, token};
use crate::helpers::fresh_store;

/// The memory layer, with `group_add` failing as a broken Redis connection
/// does, for its next `failures` calls.
pub(crate) struct FlakyJoins {
    inner: Arc<dyn ChannelLayer>,
    failures_left: AtomicUsize,
    attempts: AtomicUsize,
}

impl FlakyJoins {
    pub(crate) fn new(failures: usize) -> Arc<FlakyJoins> {
        Arc::new(FlakyJoins {
            inner: memory_layer(),
            failures_left: AtomicUsize::new(failures),
            attempts: AtomicUsize::new(0),
        })
    }

    /// Calls of `group_add` so far, failed or not.
    pub(crate) fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Every later `group_add` succeeds.
    pub(crate) fn heal(&self) {
        self.failures_left.store(0, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ChannelLayer for FlakyJoins {
    async fn new_channel(&self, prefix: &str) -> Result<String, LayerError> {
        self.inner.new_channel(prefix).await
    }
    async fn send(&self, channel: &str, message: Message) -> Result<(), LayerError> {
        self.inner.send(channel, message).await
    }
    async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        self.inner.receive(channel).await
    }
    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(LayerError::Unavailable("broken pipe".into()));
        }
        self.inner.group_add(group, channel).await
    }
    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        self.inner.group_discard(group, channel).await
    }
    async fn group_send(
        &self,
        group: &str,
        message: Message,
    ) -> Result<GroupSendReport, LayerError> {
        self.inner.group_send(group, message).await
    }
    async fn close_channel(&self, channel: &str) -> Result<(), LayerError> {
        self.inner.close_channel(channel).await
    }
}

pub(crate) async fn sidecar_on(layer: Arc<FlakyJoins>) -> Sidecar {
    spawn_with(layer, fresh_store(Backend::Sqlite).await, |_| {}).await
}

/// A join that keeps failing: six tries over 3.1 s (100, 200, 400, 800 and
/// 1,600 ms apart), then close 1011 "layer_unavailable". Until then the
/// socket hears nothing, and a notification published meanwhile reaches no
/// member (the client learns of it by the close, and resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_keeps_failing_closes_the_socket_with_1011() {
    let layer = FlakyJoins::new(usize::MAX);
    let sidecar = sidecar_on(layer.clone()).await;
    let user = 61;
    let token = token(user, Duration::from_secs(300));
    let mut client = connect(&sidecar.url(""), &[&token], None).await;
    let opened = Instant::now();
    let row = sidecar.notification(user, "while joining").await;
    let report = herald::publish::send_notification_ws(
        sidecar.layer.as_ref(),
        user,
        &herald::payload::NotificationPayload::from(&row),
    )
    .await
    .unwrap();
    assert_eq!(report.delivered, 0, "the socket is in no group");
    assert_eq!(
        client.closed().await,
        (1011, "layer_unavailable".to_string())
    );
    let waited = opened.elapsed();
    assert_eq!(layer.attempts(), 6, "the first try and five more");
    assert!(
        waited >= Duration::from_millis(3000),
        "closed after {waited:?}, before the tries were over"
    );
    sidecar
        .until("the connection is gone", |s| s.open_connections() == 0)
        .await;
    let metrics = sidecar.state.metrics();
    assert_eq!(metrics.closes.get("1011"), Some(&1), "{metrics:?}");
    assert_eq!(metrics.events_delivered, 0);
}

/// A join that fails twice and then works: the connection stays open, is
/// in its group and receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_fails_briefly_is_tried_again_and_the_socket_receives() {
    let layer = FlakyJoins::new(2);
    let sidecar = sidecar_on(layer.clone()).await;
    // `client` returns once a ping is answered, which is after the join.
    let mut client = sidecar.client(62).await;
    assert_eq!(layer.attempts(), 3);
    let row = sidecar.notification(62, "after the retries").await;
    sidecar.publish(&row).await;
    assert_eq!(client.json().await, as_event(&row));
    assert_eq!(sidecar.state.metrics().closes.get("1011"), None);
}
