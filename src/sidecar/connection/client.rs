//! What the client sends on an open connection: its rate limit, then each
//! message answered (ping, resume, token refresh, mark read), and the
//! errors that close the socket (oversized, over the rate).

use axum::extract::ws::Message;
use tokio::time::Instant;

use super::{Connection, End};
use crate::sidecar::metrics::inc;
use crate::sidecar::protocol::{
    self, ClientMessage, DecodeError, Empty, MarkedRead, Refreshed, ServerEvent, close, error_event,
};
use crate::store::Position;
use crate::tokens;

/// A token bucket over the client's messages: `rate` a second, bursts of
/// twice that.
pub(super) struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub(super) fn new(per_second: u32) -> Self {
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

impl Connection {
    /// A message from the client; every one gets an answer.
    pub(super) async fn on_client(&mut self, message: Message) -> Result<(), End> {
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
