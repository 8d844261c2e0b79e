//! The sending half of one connection: one task drains the connection's
//! bounded queue into the socket, each write bounded by the write timeout;
//! a client that stops reading is closed with 4008 instead of holding
//! memory, and a close frame can jump a full queue.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::CLOSE_GRACE;
use crate::mailbox::Mailbox;
use crate::sidecar::protocol::close;

/// How the writer task ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriterEnd {
    Done,
    Slow,
    Failed,
}

/// Owns the socket's sending half: sends what the queue holds, each write
/// bounded by `write_timeout`; a close frame from `urgent` jumps the queue.
/// Its queue is closed when it ends, so the connection's sends fail.
pub(super) async fn write_loop(
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
