//! One WebSocket connection: a channel on the layer joined to the user's
//! group, a reader loop (client messages, layer events, pings, token expiry,
//! shutdown) and a writer task behind a bounded queue with a write timeout,
//! so a client that stops reading is closed (4008) while memory stays bounded.
//!
//! Parts: the loop and the layer's events here, what the client sends
//! (`client`), replays from the database (`replay`), the sending half
//! (`writer`).

mod client;
mod replay;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use self::client::RateLimit;
use self::replay::SentIds;
use self::writer::{WriterEnd, write_loop};
use super::protocol::{self, Outgoing, close, error_event};
use super::{SidecarState, Slot, metrics::inc};
use crate::mailbox::{Mailbox, Refused};
use crate::publish::notification_group;
use crate::store::Position;
use crate::tokens::AccessToken;

/// How long a closing socket waits for the client's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Prefix of the connection's channel name, as Django's consumers use.
const CHANNEL_PREFIX: &str = "specific";

/// An authenticated connection, ready to run.
pub(crate) struct Accepted {
    pub(crate) token: AccessToken,
    /// Held for the life of the connection.
    pub(crate) slot: Slot,
    /// `?last_id=N`: replay what came after N first.
    pub(crate) last_id: Option<i64>,
    /// `?last_id=` was given but is not an integer.
    pub(crate) bad_last_id: bool,
}

/// Why the reader loop ended.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The writer ended on its own (slow client or broken socket).
    WriterGone,
    /// The client closed or the socket broke.
    PeerGone,
}

/// Sends the close frame of a refused handshake and nothing else.
pub(crate) async fn refuse(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(CLOSE_GRACE, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

struct Connection {
    state: SidecarState,
    user_id: i64,
    /// Token expiry, epoch seconds; moved by a refresh.
    exp: i64,
    /// The writer's queue.
    outbox: Arc<Mailbox<Message>>,
    /// Close frame that jumps the queue (when it is full).
    urgent: Option<oneshot::Sender<CloseFrame>>,
    sent: SentIds,
    /// Messages the client may still send now (refilled each second).
    allowance: RateLimit,
    /// When the connection opened: a resync whose loss names no start
    /// reads what was created since.
    connected_at: chrono::DateTime<chrono::Utc>,
    /// The writer closed the socket with 4008 (for the close-code count).
    slow: bool,
    /// The code of the client's close frame, when it sent one.
    peer_code: Option<u16>,
}

/// Runs an authenticated connection to its end.
pub(crate) async fn run(socket: WebSocket, state: SidecarState, accepted: Accepted) {
    let settings = &state.0.settings;
    let (sink, mut stream) = socket.split();
    let outbox = Arc::new(Mailbox::new(settings.queue_size));
    let (urgent_tx, urgent_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(
        sink,
        outbox.clone(),
        urgent_rx,
        settings.write_timeout,
    ));
    // Room for a replay's late rows and a page, so one connection's
    // replays skip what it already sent instead of sending it again.
    let capacity =
        usize::try_from(settings.replay_limit + crate::store::LATE_LIMIT).unwrap_or(0) + 256;
    let mut conn = Connection {
        state: state.clone(),
        user_id: accepted.token.user_id,
        exp: accepted.token.exp,
        outbox,
        urgent: Some(urgent_tx),
        sent: SentIds::new(capacity),
        allowance: RateLimit::new(settings.client_messages_per_second),
        connected_at: crate::store::now(),
        slow: false,
        peer_code: None,
    };
    let layer = state.0.layer.clone();
    let user_id = conn.user_id;
    let channel = match layer.new_channel(CHANNEL_PREFIX).await {
        Ok(channel) => channel,
        Err(error) => {
            tracing::error!(user_id, %error, "sidecar: no channel on the layer");
            conn.finish(
                End::Close(close::INTERNAL_ERROR, "layer_unavailable"),
                &mut stream,
                writer,
            )
            .await;
            return;
        }
    };
    tracing::debug!(user_id, channel, "WebSocket connected");
    let end = conn
        .serve(&channel, &accepted, &mut stream, &mut writer)
        .await;
    // The close frame first (finish), leaving the group meanwhile: on
    // shutdown every client hears 1001 before the layer is tidied.
    let leave = async {
        if let Err(error) = layer.close_channel(&channel).await {
            tracing::warn!(user_id, %error, "sidecar: leaving the group failed");
        }
    };
    tokio::join!(conn.finish(end, &mut stream, writer), leave);
    drop(accepted.slot);
    tracing::debug!(user_id, channel, "WebSocket closed");
}

/// Joins `group`, trying again for a few seconds when the layer fails (its
/// Redis restarting): the membership is restored with the others once the
/// layer reconnects, and the connection resyncs then.
async fn join(
    layer: &dyn crate::layer::ChannelLayer,
    group: &str,
    channel: &str,
) -> Result<(), crate::layer::LayerError> {
    use backon::Retryable;
    // 100 ms doubling, five waits (3.1 s in all); the sixth failure stands.
    let waits = crate::retry::Backoff::new(Duration::from_millis(100), Duration::MAX).take(5);
    (|| layer.group_add(group, channel))
        .retry(waits)
        .notify(|error, _| tracing::warn!(%error, "sidecar: group_add failed; trying again"))
        .await
}

/// Epoch seconds `exp` as an instant on tokio's clock.
fn deadline(exp: i64) -> Instant {
    let left = exp.saturating_sub(chrono::Utc::now().timestamp()).max(0);
    Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
}

fn is_capacity(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// The connection's task lives as long as the socket, so its future is
/// kept small: the awaits that reach the database or take a while (replays,
/// mark read, a group join) are boxed, each allocated only while it runs,
/// instead of being laid out inside every idle connection.
impl Connection {
    async fn serve(
        &mut self,
        channel: &str,
        accepted: &Accepted,
        stream: &mut SplitStream<WebSocket>,
        writer: &mut JoinHandle<WriterEnd>,
    ) -> End {
        let shared = self.state.0.clone();
        let settings = &shared.settings;
        let group = notification_group(self.user_id);
        if let Err(end) = Box::pin(self.begin(&group, channel, accepted)).await {
            return end;
        }
        let expiry = sleep_until(deadline(self.exp));
        tokio::pin!(expiry);
        let mut ping = every(settings.ping_interval);
        let mut last_heard = Instant::now();
        let mut renew = every(settings.group_renew_interval);
        loop {
            let step = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => Err(End::Close(close::GOING_AWAY, "server_shutdown")),
                ended = &mut *writer => Err(self.writer_ended(ended)),
                () = &mut expiry => {
                    inc(&shared.metrics.token_expiries);
                    Err(End::Close(close::TOKEN_EXPIRED, "token_expired"))
                }
                _ = ping.tick() => self.ping(last_heard),
                _ = renew.tick() => {
                    if let Err(error) = shared.layer.group_add(&group, channel).await {
                        tracing::warn!(user_id = self.user_id, %error, "sidecar: renewing the group membership failed");
                    }
                    Ok(())
                }
                inbound = stream.next() => {
                    last_heard = Instant::now();
                    match self.inbound(inbound) {
                        Ok(message) => {
                            let before = self.exp;
                            let step = Box::pin(self.on_client(message)).await;
                            if self.exp != before {
                                expiry.as_mut().reset(deadline(self.exp));
                            }
                            step
                        }
                        Err(end) => Err(end),
                    }
                }
                received = shared.layer.receive(channel) => match received {
                    Ok(message) => Box::pin(self.on_event(&message)).await,
                    Err(error) => {
                        tracing::error!(user_id = self.user_id, %error, "sidecar: layer receive failed");
                        Err(End::Close(close::INTERNAL_ERROR, "layer_unavailable"))
                    }
                },
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Joins the user's group, then reads the database: nothing committed
    /// in between is missed. Answers a bad `last_id` and replays from a
    /// good one.
    async fn begin(&mut self, group: &str, channel: &str, accepted: &Accepted) -> Result<(), End> {
        let shared = self.state.0.clone();
        if let Err(error) = Box::pin(join(shared.layer.as_ref(), group, channel)).await {
            tracing::error!(user_id = self.user_id, %error, "sidecar: group_add failed");
            return Err(End::Close(close::INTERNAL_ERROR, "layer_unavailable"));
        }
        if accepted.bad_last_id {
            self.queue(error_event("last_id must be an integer"))?;
        }
        if let Some(last_id) = accepted.last_id {
            Box::pin(self.replay(Position::After(last_id), false)).await?;
        }
        Ok(())
    }

    /// The writer task ended first: the client was slow, or its socket went.
    fn writer_ended(&mut self, ended: Result<WriterEnd, tokio::task::JoinError>) -> End {
        if matches!(ended, Ok(WriterEnd::Slow)) {
            self.slow = true;
            inc(&self.state.0.metrics.slow_client_disconnects);
            tracing::info!(user_id = self.user_id, "slow client disconnected");
        }
        End::WriterGone
    }

    /// A ping is due: the client answered the last one in time, or is gone.
    fn ping(&mut self, last_heard: Instant) -> Result<(), End> {
        let settings = &self.state.0.settings;
        if last_heard.elapsed() >= settings.ping_interval + settings.ping_timeout {
            inc(&self.state.0.metrics.ping_timeouts);
            return Err(End::Close(close::PING_TIMEOUT, "ping_timeout"));
        }
        self.queue_frame(Message::Ping(Default::default()))
    }

    /// What the client's side of the socket gave: a message, or the end.
    fn inbound(&self, inbound: Option<Result<Message, axum::Error>>) -> Result<Message, End> {
        match inbound {
            None => Err(End::PeerGone),
            Some(Err(error)) if is_capacity(&error) => {
                inc(&self.state.0.metrics.oversized_messages);
                Err(End::Close(close::MESSAGE_TOO_BIG, "message_too_big"))
            }
            Some(Err(_)) => Err(End::PeerGone),
            Some(Ok(message)) => Ok(message),
        }
    }

    /// Closes as `end` says, then lets the writer finish and the client
    /// answer the close, each within a bound.
    async fn finish(
        mut self,
        end: End,
        stream: &mut SplitStream<WebSocket>,
        writer: JoinHandle<WriterEnd>,
    ) {
        let write_timeout = self.state.0.settings.write_timeout;
        let metrics = &self.state.0.metrics;
        match end {
            // The writer closed with 4008 (a slow client) or the socket broke.
            End::WriterGone => {
                metrics.closed(if self.slow { close::SLOW_CLIENT } else { 1006 });
                return;
            }
            End::PeerGone => metrics.closed(self.peer_code.unwrap_or(1006)),
            End::Close(code, reason) => {
                metrics.closed(code);
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                if let Err(Refused::Full(Message::Close(Some(frame)))) =
                    self.outbox.try_send(Message::Close(Some(frame)))
                    && let Some(urgent) = self.urgent.take()
                {
                    let _ = urgent.send(frame);
                }
            }
        }
        self.outbox.close();
        drop(self.urgent);
        let _ = timeout(write_timeout + CLOSE_GRACE * 2, writer).await;
        let _ = timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }

    /// Queues a text event; a full queue means the client is not reading.
    fn queue(&mut self, text: String) -> Result<(), End> {
        self.queue_frame(Message::text(text))
    }

    fn queue_frame(&mut self, message: Message) -> Result<(), End> {
        match self.outbox.try_send(message) {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => {
                inc(&self.state.0.metrics.slow_client_disconnects);
                tracing::info!(user_id = self.user_id, "slow client: outbound queue full");
                Err(End::Close(close::SLOW_CLIENT, "slow_client"))
            }
            Err(Refused::Closed(_)) => Err(End::WriterGone),
        }
    }

    /// Queues, waiting up to the write timeout for room (used by replay,
    /// which may send more than the queue holds).
    async fn queue_wait(&mut self, text: String) -> Result<(), End> {
        let write_timeout = self.state.0.settings.write_timeout;
        match self
            .outbox
            .send_timeout(Message::text(text), write_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => {
                inc(&self.state.0.metrics.slow_client_disconnects);
                Err(End::Close(close::SLOW_CLIENT, "slow_client"))
            }
            Err(Refused::Closed(_)) => Err(End::WriterGone),
        }
    }

    /// A group event from the layer.
    async fn on_event(&mut self, message: &crate::layer::Message) -> Result<(), End> {
        let shared = self.state.0.clone();
        let metrics = &shared.metrics;
        match protocol::from_layer(message) {
            Outgoing::Notification { id, text } => {
                if let Some(id) = id
                    && !self.sent.insert(id)
                {
                    inc(&metrics.events_dropped_duplicate);
                    return Ok(());
                }
                inc(&metrics.events_delivered);
                // A burst waits for room (up to the write timeout) instead of
                // closing a client that reads, only slower: meanwhile the
                // layer's buffer fills, and what it drops is resynced.
                self.queue_wait(text).await
            }
            Outgoing::Resync(loss) => {
                inc(&metrics.resyncs);
                self.resync(loss).await
            }
            Outgoing::Other(text) => {
                inc(&metrics.events_delivered);
                self.queue_wait(text).await
            }
            Outgoing::Unknown(kind) => {
                inc(&metrics.events_dropped_unknown);
                tracing::warn!(
                    user_id = self.user_id,
                    kind,
                    "sidecar: unknown event type dropped"
                );
                Ok(())
            }
        }
    }
}

/// An interval of `period` whose first tick is one period from now, and
/// that never bursts to catch up.
fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}
