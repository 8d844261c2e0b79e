//! The brokers herald takes Celery's task messages from, one room each:
//! kombu's Redis transport (`redis`) and AMQP 0-9-1 as kombu's `pyamqp`
//! transport speaks it to RabbitMQ (`amqp`). The rest of the ingress
//! (decoding, routing, recording, results) knows none of their keys,
//! channels or bookkeeping: a round gets decoded messages and a [`Held`]
//! that keeps, puts back or acknowledges them.

pub mod amqp;
pub mod probe;
pub mod redis;

use self::amqp::{AmqpError, Tags, Taking};
use self::redis::RedisBroker;

/// The broker `celery.broker_url` names.
#[derive(Clone)]
pub enum Broker {
    Redis(RedisBroker),
    Amqp(amqp::AmqpBroker),
}

impl Broker {
    /// `"redis"` or `"amqp"`, as the stats name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "redis",
            Broker::Amqp(_) => "amqp",
        }
    }
}

/// A broker failed to take, keep, put back or acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

impl From<lapin::Error> for BrokerError {
    fn from(error: lapin::Error) -> Self {
        BrokerError::Amqp(AmqpError::Lapin(error))
    }
}

/// The messages of one round, as their broker holds them until the round
/// settles them.
pub enum Held<'a> {
    /// In kombu's `unacked` bookkeeping, by delivery tag.
    Redis {
        broker: &'a RedisBroker,
        tags: Vec<String>,
    },
    /// Unacknowledged on a channel, up to the highest tag.
    Amqp { taking: &'a Taking, tags: Tags },
}

impl Held<'_> {
    /// How many messages are held.
    pub fn count(&self) -> usize {
        match self {
            Held::Redis { tags, .. } => tags.len(),
            Held::Amqp { tags, .. } => tags.count,
        }
    }

    /// Keeps holding them while the round retries: on Redis no restore
    /// sweep may take them meanwhile; a channel holds them as long as it
    /// lives.
    pub async fn keep(&self) -> Result<(), BrokerError> {
        match self {
            Held::Redis { broker, tags } => Ok(broker.touch(&strs(tags)).await?),
            Held::Amqp { .. } => Ok(()),
        }
    }

    /// Puts them back on their queues; how many went back.
    pub async fn put_back(&self) -> Result<usize, BrokerError> {
        match self {
            Held::Redis { broker, tags } => Ok(broker.restore(&strs(tags)).await?),
            Held::Amqp { taking, tags } => Ok(taking.put_back(*tags).await?),
        }
    }

    /// Acknowledges them: they leave the broker for good.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        match self {
            Held::Redis { broker, tags } => Ok(broker.ack(&strs(tags)).await?),
            Held::Amqp { taking, tags } => Ok(taking.ack(*tags).await?),
        }
    }
}

fn strs(tags: &[String]) -> Vec<&str> {
    tags.iter().map(String::as_str).collect()
}
