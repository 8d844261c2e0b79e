//! Celery's AMQP broker (RabbitMQ), as kombu's `pyamqp` transport uses it.
//! Each consume loop has a connection and channel of its own, declares
//! herald's queues as kombu does (`topology`), and takes deliveries pushed
//! under a prefetch of `celery.batch_size`. A batch is recorded in the
//! ledger and only then acknowledged, with one `basic.ack` (`multiple`):
//! nothing is held unacknowledged longer than one round, a countdown or ETA
//! included (its wait is in the ledger), so RabbitMQ's `consumer_timeout`
//! never fires. A connection that dies takes its unacknowledged messages
//! back to their queues (redelivered, found again by their dedup key), and
//! the loop connects again with backoff.
//!
//! Parts: `url` (kombu's URLs), `topology` (declarations), `delayed`
//! (kombu's native delayed delivery for quorum queues), `headers`
//! (a delivery as the core's message parts); the connection, taking and
//! settling here.

mod delayed;
mod headers;
pub mod topology;
pub mod url;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

pub use url::{BadUrl, is_amqp};

use crate::config::CelerySettings;
use crate::ingress::message::{Refused, TaskMessage, decode_parts};

/// What can go wrong with the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error(transparent)]
    Lapin(#[from] lapin::Error),
    /// The consumers ended: the channel or connection closed, or the
    /// broker cancelled a consumer (its queue was deleted, say).
    #[error("the broker ended herald's consumers")]
    Ended,
    /// The broker refused to keep a copy herald published.
    #[error("the broker did not confirm a message herald set aside")]
    NotConfirmed,
}

/// How to reach the broker; [`AmqpBroker::open`] makes one loop's
/// connection.
#[derive(Clone)]
pub struct AmqpBroker {
    uri: std::sync::Arc<AMQPUri>,
    settings: std::sync::Arc<CelerySettings>,
}

/// One loop's connection, channel and consumers (one per queue).
pub struct Taking {
    connection: Connection,
    channel: Channel,
    deliveries: SelectAll<Consumer>,
    /// The queues' dead-letter exchange, when they have one and it exists:
    /// unreadable messages are rejected to it rather than copied to
    /// [`topology::REJECTED`].
    dead_letter: Option<String>,
}

/// What a batch's settling needs: the highest delivery tag taken (the
/// channel's tags grow, so `multiple` covers the whole batch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tags {
    pub last: u64,
    pub count: usize,
}

impl AmqpBroker {
    pub fn new(settings: &CelerySettings) -> Result<AmqpBroker, BadUrl> {
        Ok(AmqpBroker {
            uri: std::sync::Arc::new(url::parse(settings.broker_url.expose_secret())?),
            settings: std::sync::Arc::new(settings.clone()),
        })
    }

    /// A connection named `name`, nothing declared.
    pub async fn connect(&self, name: &str) -> Result<Connection, lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        Connection::connect_uri((*self.uri).clone(), properties).await
    }

    /// Connects, declares the queues as kombu does and starts consuming
    /// them, `prefetch` messages unacknowledged at most.
    pub async fn open(&self, name: &str) -> Result<Taking, lapin::Error> {
        let connection = self.connect(name).await?;
        let channel = connection.create_channel().await?;
        topology::declare_all(&channel, &self.settings).await?;
        let exchange = &self.settings.queue_dead_letter_exchange;
        let exists = topology::dead_letter_exchange_exists(&connection, &self.settings).await?;
        let dead_letter = exists.then(|| exchange.clone());
        if !exists && !exchange.is_empty() {
            tracing::error!(
                exchange = %self.settings.queue_dead_letter_exchange,
                instead = topology::REJECTED,
                "celery.queue_dead_letter_exchange does not exist on the broker: messages \
                 herald cannot read are kept in its own queue instead"
            );
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let prefetch = u16::try_from(self.settings.batch_size).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = SelectAll::new();
        for queue in &self.settings.queues {
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("{name}:{queue}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            deliveries.push(consumer);
        }
        Ok(Taking {
            connection,
            channel,
            deliveries,
            dead_letter,
        })
    }
}

/// A taken batch: each message decoded, and its tags.
#[derive(Default)]
pub struct Taken {
    pub messages: Vec<Result<TaskMessage, Refused>>,
    pub tags: Tags,
    /// Messages without a task id: rejected to the queues' dead-letter
    /// exchange, or copied to [`topology::REJECTED`].
    pub set_aside: usize,
}

impl Taking {
    /// Waits for a delivery (until `stop`: an empty batch), then takes what
    /// follows it within `linger` of the last one, `max` in all. Messages
    /// no result can answer (no task id) are set aside before the batch is
    /// handed on: rejected without requeue to the queues' dead-letter
    /// exchange when they have one, else copied to herald's rejected queue,
    /// confirmed. A rejected message leaves the batch's tags (a `multiple`
    /// ack ending on a tag no longer outstanding would close the channel).
    pub async fn take(
        &mut self,
        max: usize,
        linger: Duration,
        stop: &CancellationToken,
    ) -> Result<Taken, AmqpError> {
        let mut deliveries = Vec::new();
        let first = tokio::select! {
            next = self.deliveries.next() => next,
            () = stop.cancelled() => return Ok(Taken::default()),
        };
        deliveries.push(ended(first)?);
        while deliveries.len() < max {
            match tokio::time::timeout(linger, self.deliveries.next()).await {
                Ok(next) => deliveries.push(ended(next)?),
                Err(_) => break,
            }
        }
        let mut messages = Vec::with_capacity(deliveries.len());
        let mut tags = Tags::default();
        let mut set_aside = 0;
        for delivery in &deliveries {
            let message = decode_parts(headers::parts(delivery));
            if let Err(Refused {
                id: None, reason, ..
            }) = &message
            {
                set_aside += 1;
                if self.dead_letter.is_some() {
                    self.reject(delivery).await?;
                    continue;
                }
                self.set_aside(delivery, reason).await?;
            }
            if !matches!(message, Err(Refused { id: None, .. })) {
                messages.push(message);
            }
            tags.last = tags.last.max(delivery.delivery_tag);
            tags.count += 1;
        }
        if set_aside > 0 {
            let to = self.dead_letter.as_deref().unwrap_or(topology::REJECTED);
            tracing::error!(
                messages = set_aside,
                to,
                "unreadable Celery messages without a task id set aside"
            );
        }
        Ok(Taken {
            messages,
            tags,
            set_aside,
        })
    }

    /// Copies an unreadable delivery to [`topology::REJECTED`], as it came,
    /// with the reason and its queue in the headers.
    async fn set_aside(
        &self,
        delivery: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), AmqpError> {
        use lapin::types::{AMQPValue, LongString};
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            "x-herald-reason".into(),
            AMQPValue::LongString(LongString::from(reason.to_string())),
        );
        headers.insert(
            "x-herald-queue".into(),
            AMQPValue::LongString(LongString::from(delivery.routing_key.to_string())),
        );
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
        let confirmation = self
            .channel
            .basic_publish(
                "".into(),
                topology::REJECTED.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        if confirmation.is_nack() {
            return Err(AmqpError::NotConfirmed);
        }
        Ok(())
    }

    /// Rejects an unreadable delivery without requeue: RabbitMQ
    /// dead-letters it to the queue's dead-letter exchange.
    async fn reject(&self, delivery: &lapin::message::Delivery) -> Result<(), lapin::Error> {
        self.channel
            .basic_reject(
                delivery.delivery_tag,
                lapin::options::BasicRejectOptions { requeue: false },
            )
            .await
    }

    /// Acknowledges the batch: its messages leave the broker for good.
    pub async fn ack(&self, tags: Tags) -> Result<(), lapin::Error> {
        if tags.count == 0 {
            return Ok(());
        }
        self.channel
            .basic_ack(tags.last, BasicAckOptions { multiple: true })
            .await
    }

    /// Puts the batch back on its queues (redelivered).
    pub async fn put_back(&self, tags: Tags) -> Result<usize, lapin::Error> {
        if tags.count == 0 {
            return Ok(0);
        }
        self.channel
            .basic_nack(
                tags.last,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
        Ok(tags.count)
    }

    /// Closes the channel and the connection; what is unacknowledged goes
    /// back to its queues.
    pub async fn close(self) {
        let _ = self.channel.close(200, "herald stops".into()).await;
        let _ = self.connection.close(200, "herald stops".into()).await;
    }
}

/// A delivery, or the end of the consumers as [`AmqpError::Ended`].
fn ended(
    next: Option<Result<lapin::message::Delivery, lapin::Error>>,
) -> Result<lapin::message::Delivery, AmqpError> {
    next.ok_or(AmqpError::Ended)?.map_err(AmqpError::from)
}
