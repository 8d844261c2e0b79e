//! The queues herald consumes, declared exactly as kombu declares them for
//! the application's routes (celery `app/amqp.py`, kombu `entity.py`), so
//! RabbitMQ never answers `PRECONDITION_FAILED` to one side or the other:
//! a durable direct exchange named after the queue, the durable queue with
//! the application's arguments (`x-max-priority` from
//! `task_queue_max_priority`, `x-queue-type: quorum` from
//! `task_create_missing_queue_type`, as for a queue a route names), and
//! the binding by the queue's name. The exchange is a topic instead when
//! the application names one (`task_create_missing_queue_exchange_type`):
//! then a countdown can come by kombu's native delayed delivery, and the
//! queue is bound to it as Celery's worker binds it (`delayed`). Also
//! herald's own durable queue for messages it cannot read.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::config::CelerySettings;

/// Herald's queue for messages without a task id, which no result can
/// answer: kept there instead of lost (on the default exchange).
pub const REJECTED: &str = "herald.rejected";

/// The queue arguments Celery gives each of its queues.
pub fn queue_arguments(settings: &CelerySettings) -> FieldTable {
    let mut arguments = FieldTable::default();
    if settings.queue_max_priority > 0 {
        arguments.insert(
            "x-max-priority".into(),
            AMQPValue::LongInt(i32::from(settings.queue_max_priority)),
        );
    }
    if settings.queue_type == "quorum" {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    if !settings.queue_dead_letter_exchange.is_empty() {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(
                settings.queue_dead_letter_exchange.as_str(),
            )),
        );
    }
    arguments
}

/// Whether the settings give herald's queues a topic exchange, which is
/// what native delayed delivery routes through.
pub fn topic(settings: &CelerySettings) -> bool {
    settings.queue_exchange_type == "topic"
}

/// Declares herald's queues (exchange, queue, binding) as kombu does, and
/// on a topic exchange the delayed-delivery ladder and each queue's binding
/// to it, as Celery's `DelayedDelivery` bootstep does.
pub async fn declare_all(channel: &Channel, settings: &CelerySettings) -> Result<(), lapin::Error> {
    for queue in &settings.queues {
        declare(channel, queue, settings).await?;
    }
    if topic(settings) {
        super::delayed::declare_ladder(channel, &settings.delayed_delivery_queue_type).await?;
        for queue in &settings.queues {
            super::delayed::bind_queue(channel, queue).await?;
        }
    }
    declare_rejected(channel).await
}

/// Declares `queue` (exchange, queue, binding) as kombu does.
pub async fn declare(
    channel: &Channel,
    queue: &str,
    settings: &CelerySettings,
) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let kind = if topic(settings) {
        ExchangeKind::Topic
    } else {
        ExchangeKind::Direct
    };
    channel
        .exchange_declare(queue.into(), kind, durable, FieldTable::default())
        .await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, queue_arguments(settings))
        .await?;
    channel
        .queue_bind(
            queue.into(),
            queue.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Whether the queues' dead-letter exchange exists: a message rejected to
/// one that does not is dropped by RabbitMQ without a word. Asked on a
/// channel of its own, which a missing exchange closes (404).
pub async fn dead_letter_exchange_exists(
    connection: &lapin::Connection,
    settings: &CelerySettings,
) -> Result<bool, lapin::Error> {
    let name = settings.queue_dead_letter_exchange.as_str();
    if name.is_empty() {
        return Ok(false);
    }
    let channel = connection.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    match channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => {
            let _ = channel.close(200, "asked".into()).await;
            Ok(true)
        }
        // NOT_FOUND closes the channel only: a soft error.
        Err(error) if error.is_amqp_soft_error() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Declares herald's [`REJECTED`] queue.
pub async fn declare_rejected(channel: &Channel) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(REJECTED.into(), options, FieldTable::default())
        .await
        .map(drop)
}

/// Messages waiting in `queue` and its consumers, by a passive declare
/// (which changes nothing and fails when the queue does not exist).
pub async fn depth(channel: &Channel, queue: &str) -> Result<(u32, u32), lapin::Error> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok((queue.message_count(), queue.consumer_count()))
}
