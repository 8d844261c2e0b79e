//! kombu's native delayed delivery, as Celery's `DelayedDelivery` worker
//! bootstep sets it up (kombu `transport/native_delayed_delivery.py`).
//! Quorum queues have no per-consumer prefetch to hold ETA messages with,
//! so a Celery 5.5+ producer whose app has a quorum queue sends a countdown
//! to a queue on a topic exchange through a ladder of 28 delay queues: the
//! routing key spells the delay in 28 binary digits (`0.0. ... .1.0.herald`),
//! level L holds a message whose bit L is set for 2^L seconds (its TTL) and
//! dead-letters it to level L-1; level 0 dead-letters to the topic
//! exchange `celery_delayed_delivery`, which routes `#.<routing key>` back
//! to the queue's exchange.
//!
//! The producer declares none of it: only a worker does. When herald is
//! the application's only worker for a queue, herald must declare the
//! ladder and bind its queues, or the countdown is lost at the exchange.
//! Declarations match kombu's exactly (RabbitMQ refuses a redeclaration
//! with other arguments).

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The levels of the ladder: bits of the delay in seconds.
const LEVELS: u32 = 28;
/// The exchange level 0 dead-letters to, which routes by the queue's key.
pub(super) const DELIVERY: &str = "celery_delayed_delivery";

fn level(n: u32) -> String {
    format!("celery_delayed_{n}")
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// An integer as py-amqp writes it: a signed 32-bit `I` when it fits, else
/// a 64-bit `L` (RabbitMQ compares an argument's type as well as its value).
fn integer(value: i64) -> AMQPValue {
    match i32::try_from(value) {
        Ok(small) if small != i32::MIN => AMQPValue::LongInt(small),
        _ => AMQPValue::LongLongInt(value),
    }
}

/// `n` times `*.`: the bits above a level, whatever they are.
fn any_bits(n: u32) -> String {
    "*.".repeat(n as usize)
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// The arguments of level `n`'s queue (`queue_type`: Celery's
/// `broker_native_delayed_delivery_queue_type`, `quorum` or `classic`).
fn level_arguments(n: u32, queue_type: &str) -> FieldTable {
    let next = if n > 0 { level(n - 1) } else { DELIVERY.into() };
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text(queue_type));
    arguments.insert("x-overflow".into(), text("reject-publish"));
    arguments.insert("x-message-ttl".into(), integer((1i64 << n) * 1000));
    arguments.insert("x-dead-letter-exchange".into(), text(&next));
    if queue_type == "quorum" {
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    }
    arguments
}

/// Declares the ladder as `declare_native_delayed_delivery_exchanges_and_queues`
/// does: for each level from 27 down, its topic exchange and its queue bound
/// by the level's bit set; each exchange passes a clear bit on to the next
/// level, and level 0 to [`DELIVERY`].
pub(super) async fn declare_ladder(
    channel: &Channel,
    queue_type: &str,
) -> Result<(), lapin::Error> {
    for n in (0..LEVELS).rev() {
        let name = level(n);
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(
                name.as_str().into(),
                options,
                level_arguments(n, queue_type),
            )
            .await?;
        let set = format!("{}1.#", any_bits(LEVELS - 1 - n));
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                set.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for n in (1..LEVELS).rev() {
        let clear = format!("{}0.#", any_bits(LEVELS - 1 - n));
        bind_exchange(channel, &level(n - 1), &level(n), &clear).await?;
    }
    channel
        .exchange_declare(
            DELIVERY.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let clear = format!("{}0.#", any_bits(LEVELS - 1));
    bind_exchange(channel, DELIVERY, &level(0), &clear).await
}

/// Routes what reaches [`DELIVERY`] for `queue` back to it, as
/// `bind_queue_to_native_delayed_delivery_exchange` does: its exchange
/// (named after it, topic) bound to [`DELIVERY`] by `#.<queue>`, and the
/// queue to its exchange by the same key.
pub(super) async fn bind_queue(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    let key = format!("#.{queue}");
    bind_exchange(channel, queue, DELIVERY, &key).await?;
    channel
        .queue_bind(
            queue.into(),
            queue.into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

async fn bind_exchange(
    channel: &Channel,
    destination: &str,
    source: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_levels_match_kombus_arguments_and_keys() {
        let top = level_arguments(27, "quorum");
        let inner = top.inner();
        assert_eq!(
            inner.get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(134_217_728_000))
        );
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&text("celery_delayed_26"))
        );
        assert_eq!(
            inner.get("x-dead-letter-strategy"),
            Some(&text("at-least-once"))
        );
        let bottom = level_arguments(0, "classic");
        assert_eq!(
            bottom.inner().get("x-dead-letter-exchange"),
            Some(&text(DELIVERY))
        );
        assert_eq!(bottom.inner().get("x-dead-letter-strategy"), None);
        assert_eq!(
            bottom.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongInt(1000))
        );
        assert_eq!(format!("{}1.#", any_bits(LEVELS - 1 - 27)), "1.#");
        assert_eq!(format!("{}1.#", any_bits(LEVELS - 1 - 26)), "*.1.#");
    }
}
