//! One WebSocket connection: a channel on the layer joined to the user's
//! group, a reader loop (client messages, layer events, pings, token expiry,
//! shutdown) and a writer task behind a bounded queue with a write timeout,
//! so a client that stops reading is closed (4008) while memory stays bounded.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use super::protocol::{
    self, ClientMessage, DecodeError, Empty, MarkedRead, Outgoing, Refreshed, Resumed, ServerEvent,
    close, error_event,
};
use super::{SidecarState, Slot, metrics::inc};
use crate::mailbox::{Mailbox, Refused};
use crate::payload::NotificationPayload;
use crate::publish::notification_group;
use crate::store::Position;
use crate::tokens::{self, AccessToken};

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

/// How the writer task ended.
#[derive(Debug, PartialEq, Eq)]
enum WriterEnd {
    Done,
    Slow,
    Failed,
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

/// Ids this connection already sent, so a notification reaching it both
/// from the database (resume) and live is sent once. Bounded: the oldest
/// ids are forgotten first.
struct SentIds {
    order: VecDeque<i64>,
    set: HashSet<i64>,
    capacity: usize,
}

impl SentIds {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity,
        }
    }

    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    #[cfg(test)]
    fn contains(&self, id: i64) -> bool {
        self.set.contains(&id)
    }
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
    /// The highest notification id the client was sent or resumed from: a
    /// resync reads what came after it.
    cursor: Option<i64>,
    /// When the connection opened: a resync before any cursor reads what
    /// was created since.
    connected_at: chrono::DateTime<chrono::Utc>,
    /// The writer closed the socket with 4008 (for the close-code count).
    slow: bool,
    /// The code of the client's close frame, when it sent one.
    peer_code: Option<u16>,
}

/// A token bucket over the client's messages: `rate` a second, bursts of
/// twice that.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            tokens: rate * 2.0,
            at: Instant::now(),
        }
    }

    /// Takes one message's token; false when none is left.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
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
    let capacity = usize::try_from(settings.replay_limit).unwrap_or(0) + 256;
    let mut conn = Connection {
        state: state.clone(),
        user_id: accepted.token.user_id,
        exp: accepted.token.exp,
        outbox,
        urgent: Some(urgent_tx),
        sent: SentIds::new(capacity),
        allowance: RateLimit::new(settings.client_messages_per_second),
        cursor: accepted.last_id,
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
                if let Some(id) = id {
                    if !self.sent.insert(id) {
                        inc(&metrics.events_dropped_duplicate);
                        return Ok(());
                    }
                    self.advance(id);
                }
                inc(&metrics.events_delivered);
                // A burst waits for room (up to the write timeout) instead of
                // closing a client that reads, only slower: meanwhile the
                // layer's buffer fills, and what it drops is resynced.
                self.queue_wait(text).await
            }
            Outgoing::Resync => {
                inc(&metrics.resyncs);
                let position = match self.cursor {
                    Some(id) => Position::After(id),
                    None => Position::Since(self.connected_at),
                };
                self.replay(position, true).await
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

    /// A message from the client; every one gets an answer.
    async fn on_client(&mut self, message: Message) -> Result<(), End> {
        let max = self.state.0.settings.max_message_size;
        if matches!(message, Message::Text(_) | Message::Binary(_)) && !self.allowance.take() {
            tracing::info!(
                user_id = self.user_id,
                "client over its message rate; closed"
            );
            return Err(End::Close(close::POLICY_VIOLATION, "rate_limited"));
        }
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(bytes) if bytes.len() > max => return self.oversized(),
            Message::Binary(_) => {
                return self.queue(error_event(&DecodeError::NotText.to_string()));
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(frame) => {
                // 1005: the client's close frame carried no code.
                self.peer_code = Some(frame.map_or(1005, |frame| frame.code));
                return Err(End::PeerGone);
            }
        };

        if text.as_str().len() > max {
            return self.oversized();
        }
        match protocol::decode(text.as_str()) {
            Err(error) => self.queue(error_event(&error.to_string())),
            Ok(ClientMessage::Ping) => self.queue(ServerEvent::Pong(Empty {}).to_text()),
            Ok(ClientMessage::Resume { last_id }) => {
                self.replay(Position::After(last_id), false).await
            }
            Ok(ClientMessage::Refresh { token }) => self.refresh(&token),
            Ok(ClientMessage::MarkRead { id }) => self.mark_read(Some(id)).await,
            Ok(ClientMessage::MarkAllRead) => self.mark_read(None).await,
        }
    }

    fn oversized(&mut self) -> Result<(), End> {
        inc(&self.state.0.metrics.oversized_messages);
        Err(End::Close(close::MESSAGE_TOO_BIG, "message_too_big"))
    }

    /// Moves the cursor up to `id`.
    fn advance(&mut self, id: i64) {
        self.cursor = Some(self.cursor.map_or(id, |cursor| cursor.max(id)));
    }

    /// Sends what the user missed after `position` from the database
    /// (see [`crate::store::Position`]), oldest id first, skipping ids
    /// already sent, then `{"type": "resumed", "data": {count, last_id,
    /// more, recovered, resync}}`. A client's resume is one page of at most
    /// `replay_limit` past its position (`more` asks it to resume again); a
    /// resync (`resync`: the server's own, for live messages the layer may
    /// have lost) reads every page before answering once.
    async fn replay(&mut self, position: Position, resync: bool) -> Result<(), End> {
        let mut position = position;
        let mut answer = Resumed {
            count: 0,
            last_id: 0,
            more: false,
            recovered: true,
            resync,
        };
        loop {
            let Some(page) = self.replay_page(position).await? else {
                return self.queue(error_event(
                    "could not load missed notifications; send resume again",
                ));
            };
            answer.count += page.count;
            answer.last_id = page.last_id;
            answer.more = page.more;
            answer.recovered &= page.recovered;
            if !(resync && page.more) {
                break;
            }
            position = Position::After(page.last_id);
        }
        self.queue_wait(ServerEvent::Resumed(answer).to_text())
            .await
    }

    /// One page of [`Connection::replay`]: its rows sent, its summary
    /// answered (`None` when the database could not be read).
    async fn replay_page(&mut self, position: Position) -> Result<Option<Resumed>, End> {
        let shared = self.state.0.clone();
        let settings = &shared.settings;
        let lookback =
            chrono::TimeDelta::from_std(settings.resume_lookback).unwrap_or(chrono::TimeDelta::MAX);
        let missed = match shared
            .store
            .missed_notifications(self.user_id, position, lookback, settings.replay_limit)
            .await
        {
            Ok(missed) => missed,
            Err(error) => {
                tracing::error!(user_id = self.user_id, %error, "sidecar: reading missed notifications failed");
                return Ok(None);
            }
        };
        let mut count = 0u64;
        let mut last = match position {
            Position::After(id) => id,
            Position::Since(_) => self.cursor.unwrap_or(0),
        };
        if let Position::After(id) = position
            && id > 0
        {
            // The client has its position's row: never send it again.
            self.sent.insert(id);
        }
        for row in &missed.rows {
            last = last.max(row.id);
            if !self.sent.insert(row.id) {
                continue;
            }
            let payload = NotificationPayload::from(row);
            self.queue_wait(ServerEvent::Notification(payload).to_text())
                .await?;
            count += 1;
        }
        self.advance(last);
        shared.metrics.notifications_replayed.increment(count);
        Ok(Some(Resumed {
            count,
            last_id: last,
            more: missed.more,
            recovered: missed.recovered,
            resync: false,
        }))
    }

    /// A fresh token for the same user moves the expiry.
    fn refresh(&mut self, token: &str) -> Result<(), End> {
        match tokens::validate(&self.state.0.secret, token) {
            Ok(fresh) if fresh.user_id == self.user_id => {
                self.exp = fresh.exp;
                self.queue(ServerEvent::Refreshed(Refreshed { exp: fresh.exp }).to_text())
            }
            Ok(_) => self.queue(error_event(
                "refresh refused: the token is for another user",
            )),
            Err(error) => self.queue(error_event(&format!("refresh refused: {error}"))),
        }
    }

    /// Marks one notification (or all) of this user read.
    async fn mark_read(&mut self, id: Option<i64>) -> Result<(), End> {
        let store = self.state.0.store.clone();
        let user_id = self.user_id;
        let result = async {
            let updated = match id {
                Some(id) => u64::from(store.mark_read(user_id, id).await?),
                None => store.mark_all_read(user_id).await?,
            };
            let unread = store.unread_count(user_id).await?;
            Ok::<_, crate::store::StoreError>((updated, unread))
        }
        .await;
        match result {
            Ok((updated, unread_count)) => {
                let marked = MarkedRead {
                    id,
                    updated,
                    unread_count,
                };
                self.queue(ServerEvent::MarkedRead(marked).to_text())
            }
            Err(error) => {
                tracing::error!(user_id, %error, "sidecar: mark read failed");
                self.queue(error_event("could not mark read; try again"))
            }
        }
    }
}

/// Owns the socket's sending half: sends what the queue holds, each write
/// bounded by `write_timeout`; a close frame from `urgent` jumps the queue.
/// Its queue is closed when it ends, so the connection's sends fail.
async fn write_loop(
    sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Mailbox<Message>>,
    urgent: oneshot::Receiver<CloseFrame>,
    write_timeout: Duration,
) -> WriterEnd {
    let end = write_until_done(sink, &outbox, urgent, write_timeout).await;
    outbox.close();
    end
}

async fn write_until_done(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: &Mailbox<Message>,
    mut urgent: oneshot::Receiver<CloseFrame>,
    write_timeout: Duration,
) -> WriterEnd {
    let mut urgent_open = true;
    loop {
        let next = tokio::select! {
            biased;
            frame = &mut urgent, if urgent_open => match frame {
                Ok(frame) => Some(Message::Close(Some(frame))),
                Err(_) => {
                    urgent_open = false;
                    continue;
                }
            },
            message = outbox.recv() => message,
        };
        let Some(message) = next else {
            let _ = timeout(CLOSE_GRACE, sink.close()).await;
            return WriterEnd::Done;
        };
        let closing = matches!(message, Message::Close(_));
        match timeout(write_timeout, sink.send(message)).await {
            Ok(Ok(())) if closing => return WriterEnd::Done,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return WriterEnd::Failed,
            Err(_) => {
                let frame = CloseFrame {
                    code: close::SLOW_CLIENT,
                    reason: "slow_client".into(),
                };
                let _ = timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
                return WriterEnd::Slow;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_ids_forget_the_oldest() {
        let mut sent = SentIds::new(2);
        assert!(sent.insert(1));
        assert!(!sent.insert(1));
        assert!(sent.insert(2));
        assert!(sent.insert(3));
        assert!(!sent.contains(1));
        assert!(sent.contains(2) && sent.contains(3));
    }
}
