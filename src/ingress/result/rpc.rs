//! Celery's rpc:// result backend, written the way a Celery worker sends it:
//! each result is one message on the broker (AMQP), published to the
//! default exchange with the caller's reply queue as routing key (the task
//! message's `reply_to`) and the task id as `correlation_id`; its body is
//! the same `{status, result, traceback, children, date_done, task_id}` the
//! Redis backend stores. The caller's `AsyncResult.get()` declared that
//! queue when it sent the task, and picks its result out by correlation id.
//!
//! A countdown may wait days between the message and its result, so the
//! reply queue is remembered in the store (`herald_celery_replies`) when the
//! ingress records the message, and forgotten once its result is confirmed
//! by the broker. A task whose message named no reply queue (sent with
//! `ignore_result`, or by a caller on another backend) gets no message.

use std::sync::Arc;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{Outcome, ResultError, meta};
use crate::store::Store;

/// Delivery modes: transient results (Celery's default) and persistent ones
/// (`result_persistent`).
const TRANSIENT: u8 = 1;
const PERSISTENT: u8 = 2;

/// The rpc backend: the broker's address, one publishing channel opened on
/// first use (and again after it closed), and the store of reply queues.
#[derive(Clone)]
pub struct RpcResults {
    uri: Arc<AMQPUri>,
    store: Store,
    delivery_mode: u8,
    open: Arc<Mutex<Option<(Connection, Channel)>>>,
}

impl RpcResults {
    /// For the AMQP broker at `uri`, reply queues kept in `store`.
    pub fn new(uri: AMQPUri, store: Store, persistent: bool) -> RpcResults {
        RpcResults {
            uri: Arc::new(uri),
            store,
            delivery_mode: if persistent { PERSISTENT } else { TRANSIENT },
            open: Arc::default(),
        }
    }

    /// Remembers the reply queue of each task in `replies` (task id, queue).
    pub async fn remember(&self, replies: &[(String, String)]) -> Result<(), ResultError> {
        if replies.is_empty() {
            return Ok(());
        }
        Ok(self.store.remember_replies(replies).await?)
    }

    /// The publishing channel, in confirm mode; connects when there is none
    /// or the last one closed.
    async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let properties =
            ConnectionProperties::default().with_connection_name("herald results".into());
        let connection = Connection::connect_uri((*self.uri).clone(), properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Sends the results of `ended` (task id, outcome) to their callers'
    /// reply queues and waits for the broker to confirm each; then forgets
    /// those queues. Tasks with no reply queue known are passed over.
    pub async fn store(&self, ended: &[(String, Outcome)]) -> Result<(), ResultError> {
        if ended.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ended.iter().map(|(id, _)| id.clone()).collect();
        let replies = self.store.replies_for(&ids).await?;
        if replies.is_empty() {
            return Ok(());
        }
        let channel = self.channel().await?;
        let now = Utc::now();
        let mut confirms = Vec::with_capacity(replies.len());
        let mut sent = Vec::with_capacity(replies.len());
        for (id, outcome) in ended {
            let Some(queue) = replies.get(id) else {
                continue;
            };
            let body = meta(id, outcome, now).to_string();
            let properties = BasicProperties::default()
                .with_correlation_id(id.as_str().into())
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(self.delivery_mode)
                .with_priority(0);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await?;
            confirms.push(confirm);
            // The reply queue is kept until the task's end has gone out.
            if outcome.is_ready() {
                sent.push(id.clone());
            }
        }
        for confirm in confirms {
            if !confirm.await?.is_ack() {
                return Err(ResultError::NotConfirmed);
            }
        }
        self.store.forget_replies(&sent).await?;
        Ok(())
    }
}
