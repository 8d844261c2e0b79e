//! The queues herald consumes, declared exactly as kombu declares them for
//! the application's routes (celery `app/amqp.py`, kombu `entity.py`), so
//! RabbitMQ never answers `PRECONDITION_FAILED` to one side or the other:
//! a durable direct exchange named after the queue, the durable queue with
//! the application's arguments (`x-max-priority` from
//! `task_queue_max_priority`, `x-queue-type: quorum` from
//! `task_create_missing_queue_type`, as for a queue a route names), and
//! the binding by the queue's name. Also herald's own durable queue for
//! messages it cannot read.

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
    arguments
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
    channel
        .exchange_declare(
            queue.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
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
