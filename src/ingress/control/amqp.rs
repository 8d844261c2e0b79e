//! Celery's remote control on AMQP, as kombu's `Mailbox` declares it: the
//! fanout exchange `celery.pidbox` (not durable), and per node an exclusive,
//! auto-deleted queue `<node>.celery.pidbox` bound to it, with Celery's
//! `control_queue_expires` (10 s, `x-expires`) and `control_queue_ttl`
//! (300 s, `x-message-ttl`). Replies go, transient, to the direct exchange
//! `reply.celery.pidbox` with the caller's routing key and the ticket in the
//! headers, where the caller's reply queue is bound.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Command, Node};
use crate::ingress::broker::amqp::AmqpBroker;
use crate::retry::Backoff;

const EXCHANGE: &str = "celery.pidbox";

/// Listens on this node's queue and answers until `stop`, connecting again
/// with backoff when the broker goes.
pub async fn listen(node: Arc<Node>, broker: AmqpBroker, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        match serve(&node, &broker, &stop).await {
            Ok(()) => return,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, "Celery's remote control lost the AMQP broker; connecting again");
                if !crate::ingress::pause(wait, &stop).await {
                    return;
                }
            }
        }
    }
}

/// One connection's life: declare, consume, answer; `Ok` once stopped.
async fn serve(
    node: &Node,
    broker: &AmqpBroker,
    stop: &CancellationToken,
) -> Result<(), lapin::Error> {
    let connection = broker
        .connect(&format!("herald:pidbox:{}", node.name))
        .await?;
    let channel = connection.create_channel().await?;
    let queue = format!("{}.celery.pidbox", node.name);
    declare(&channel, &queue).await?;
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            format!("{}:pidbox", node.name).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(node = node.name, queue, "answering Celery's remote control");
    loop {
        let delivery = tokio::select! {
            next = deliveries.next() => next,
            () = stop.cancelled() => {
                let _ = connection.close(200, "herald stops".into()).await;
                return Ok(());
            }
        };
        let Some(delivery) = delivery else {
            return Err(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Closed,
                "the pidbox consumer ended",
            )
            .into());
        };
        let delivery = delivery?;
        delivery.ack(BasicAckOptions::default()).await?;
        let command = serde_json::from_slice::<Value>(&delivery.data)
            .ok()
            .and_then(|body| Command::parse(&body));
        let Some(command) = command else {
            tracing::debug!("a remote-control message herald cannot read");
            continue;
        };
        let Some(answer) = node.respond(&command).await else {
            continue;
        };
        if let Some((exchange, routing_key)) = &command.reply_to {
            let ticket = command.ticket.clone().unwrap_or_default();
            reply(&channel, exchange, routing_key, &ticket, &answer).await?;
        }
    }
}

/// The fanout exchange and this node's queue, as kombu's `Mailbox` makes
/// them for Celery (py-amqp types the numbers as signed 32-bit).
async fn declare(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(10_000));
    arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(300_000));
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Publishes `answer` to the caller's reply exchange, as kombu's node does.
async fn reply(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    ticket: &str,
    answer: &Value,
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut headers = FieldTable::default();
    headers.insert(
        "ticket".into(),
        AMQPValue::LongString(LongString::from(ticket)),
    );
    headers.insert("clock".into(), AMQPValue::LongInt(0));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_priority(0)
        .with_headers(headers);
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            answer.to_string().as_bytes(),
            properties,
        )
        .await?;
    Ok(())
}
