//! What the dashboard reads of Celery's broker for itself: each of
//! herald's queues' messages waiting and, on AMQP, its consumers. A probe
//! connects on first use and again after a failure; it never declares or
//! takes anything. On Redis a queue's messages are its lists (one per
//! priority step, kombu's layout); on AMQP a passive `queue.declare`
//! answers both counts (and closes its channel when the queue does not
//! exist, so each queue is asked on a channel of its own).

use super::BrokerError;
use super::amqp::{AmqpBroker, topology};
use super::redis::RedisBroker;
use crate::config::CelerySettings;

/// One of herald's queues on the broker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    pub name: String,
    /// Messages waiting to be taken (not those held unacknowledged); none
    /// when the queue does not exist on the broker.
    pub waiting: Option<u64>,
    /// Consumers of the queue (AMQP only: Redis does not know its readers).
    pub consumers: Option<u64>,
}

/// Reads the broker `celery.broker_url` names.
pub enum BrokerProbe {
    Redis {
        settings: Box<CelerySettings>,
        broker: Option<RedisBroker>,
    },
    Amqp {
        settings: Box<CelerySettings>,
        broker: AmqpBroker,
        connection: Option<lapin::Connection>,
    },
}

impl BrokerProbe {
    /// The probe of the configured broker; none when the ingress is off or
    /// the URL does not parse (startup refuses that anyway).
    pub fn new(settings: &CelerySettings) -> Option<BrokerProbe> {
        use secrecy::ExposeSecret;
        if !settings.enabled() {
            return None;
        }
        let settings = Box::new(settings.clone());
        if super::amqp::is_amqp(settings.broker_url.expose_secret()) {
            let broker = AmqpBroker::new(&settings).ok()?;
            return Some(BrokerProbe::Amqp {
                settings,
                broker,
                connection: None,
            });
        }
        Some(BrokerProbe::Redis {
            settings,
            broker: None,
        })
    }

    /// `"redis"` or `"amqp"`.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerProbe::Redis { .. } => "redis",
            BrokerProbe::Amqp { .. } => "amqp",
        }
    }

    /// Each of herald's queues, read now.
    pub async fn depths(&mut self) -> Result<Vec<QueueDepth>, BrokerError> {
        match self {
            BrokerProbe::Redis { settings, broker } => {
                if broker.is_none() {
                    *broker = Some(RedisBroker::connect(settings).await?);
                }
                let broker = broker.as_ref().expect("connected above");
                let mut depths = Vec::with_capacity(settings.queues.len());
                for queue in &settings.queues {
                    depths.push(QueueDepth {
                        name: queue.clone(),
                        waiting: Some(broker.waiting(queue).await?),
                        consumers: None,
                    });
                }
                Ok(depths)
            }
            BrokerProbe::Amqp {
                settings,
                broker,
                connection,
            } => {
                let read = amqp_depths(settings, broker, connection).await;
                if read.is_err() {
                    // Connect afresh next time.
                    *connection = None;
                }
                read
            }
        }
    }
}

async fn amqp_depths(
    settings: &CelerySettings,
    broker: &AmqpBroker,
    connection: &mut Option<lapin::Connection>,
) -> Result<Vec<QueueDepth>, BrokerError> {
    let open = match connection.take() {
        Some(open) if open.status().connected() => open,
        _ => broker.connect("herald:dashboard").await?,
    };
    let mut depths = Vec::with_capacity(settings.queues.len());
    for queue in &settings.queues {
        let channel = open.create_channel().await?;
        let depth = match topology::depth(&channel, queue).await {
            Ok((waiting, consumers)) => {
                let _ = channel.close(200, "read".into()).await;
                QueueDepth {
                    name: queue.clone(),
                    waiting: Some(u64::from(waiting)),
                    consumers: Some(u64::from(consumers)),
                }
            }
            // NOT_FOUND closes the channel only.
            Err(error) if error.is_amqp_soft_error() => QueueDepth {
                name: queue.clone(),
                waiting: None,
                consumers: None,
            },
            Err(error) => return Err(error.into()),
        };
        depths.push(depth);
    }
    *connection = Some(open);
    Ok(depths)
}
