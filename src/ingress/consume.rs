//! The loops that feed rounds, one kind per broker. On Redis a loop takes
//! a batch with one script, polling the lists every `poll_interval`, and a
//! restore sweep puts back what dead consumers held. On AMQP each loop
//! keeps a connection of its own, waits for deliveries pushed to it, and
//! connects again with backoff when the connection goes (the broker puts
//! back what that connection held).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::amqp::AmqpBroker;
use super::broker::redis::RedisBroker;
use super::broker::{Broker, Held};
use super::{Shared, Swept, broker_backoff, message, pause};
use crate::telemetry::metrics::{CELERY_BROKER_CONNECTED, CELERY_BROKER_RECONNECTS};

/// Starts `celery.concurrency` loops on the broker (and the restore sweep
/// on Redis), until `stop`.
pub(super) fn start(shared: &Arc<Shared>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let loops = 0..shared.settings.concurrency;
    match &shared.broker {
        Broker::Redis(broker) => {
            let mut tasks: Vec<JoinHandle<()>> = loops
                .map(|i| tokio::spawn(redis_loop(shared.clone(), broker.clone(), i, stop.clone())))
                .collect();
            tasks.push(tokio::spawn(sweep(
                shared.clone(),
                broker.clone(),
                stop.clone(),
            )));
            tasks
        }
        Broker::Amqp(broker) => loops
            .map(|i| tokio::spawn(amqp_loop(shared.clone(), broker.clone(), i, stop.clone())))
            .collect(),
    }
}

/// One take-record-acknowledge loop on Redis, starting its round robin at
/// queue `first`; until `stop`.
async fn redis_loop(
    shared: Arc<Shared>,
    broker: RedisBroker,
    first: usize,
    stop: CancellationToken,
) {
    let settings = &shared.settings;
    let mut turn = first;
    let mut backoff = broker_backoff();
    while !stop.is_cancelled() {
        let taken = match broker.take(settings.batch_size, turn).await {
            Ok(taken) => taken,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, "could not take Celery messages; trying again");
                if !pause(wait, &stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        turn = turn.wrapping_add(1);
        if taken.is_empty() {
            if !pause(settings.poll_interval, &stop).await {
                return;
            }
            continue;
        }
        let unreadable = taken.iter().filter(|t| t.tag.is_none()).count();
        if unreadable > 0 {
            let list = broker.keys.rejected();
            tracing::error!(
                messages = unreadable,
                list,
                "unreadable Celery messages set aside"
            );
        }
        let (messages, tags) = taken
            .into_iter()
            .filter_map(|t| Some((message::decode(&t.raw), t.tag?)))
            .unzip();
        let held = Held::Redis {
            broker: &broker,
            tags,
        };
        shared.round(messages, held, &stop).await;
    }
}

/// The restore sweep: at start, then every half `restore_after` (at most
/// every 10 s), until `stop`.
async fn sweep(shared: Arc<Shared>, broker: RedisBroker, stop: CancellationToken) {
    let settings = &shared.settings;
    let every =
        (settings.restore_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match broker
            .sweep(settings.restore_after, settings.visibility_timeout)
            .await
        {
            Ok(Swept { restored: 0, .. }) => {}
            Ok(swept) => tracing::info!(
                restored = swept.restored,
                "unacknowledged Celery messages put back"
            ),
            Err(error) => tracing::warn!(%error, "Celery restore sweep failed"),
        }
        if !pause(every, &stop).await {
            return;
        }
    }
}

/// How long an AMQP loop waits for one more delivery before it records
/// what it has: deliveries under a prefetch arrive back to back.
const LINGER: Duration = Duration::from_millis(5);

/// One AMQP loop (number `n`): connect, take, record, acknowledge, and on
/// a lost connection connect again with backoff; until `stop`.
async fn amqp_loop(shared: Arc<Shared>, broker: AmqpBroker, n: usize, stop: CancellationToken) {
    let settings = &shared.settings;
    let name = format!("herald:{}:{n}", std::process::id());
    let mut backoff = broker_backoff();
    let mut lost = false;
    while !stop.is_cancelled() {
        let mut taking = match broker.open(&name).await {
            Ok(taking) => taking,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, "could not connect to Celery's AMQP broker; trying again");
                if !pause(wait, &stop).await {
                    return;
                }
                continue;
            }
        };
        if lost {
            metrics::counter!(CELERY_BROKER_RECONNECTS).increment(1);
            tracing::info!(connection = name, "connected to Celery's AMQP broker again");
        }
        metrics::gauge!(CELERY_BROKER_CONNECTED).increment(1.0);
        backoff.reset();
        let error = loop {
            match taking.take(settings.batch_size, LINGER, &stop).await {
                Ok(taken) if taken.tags.count == 0 => break None,
                Ok(taken) => {
                    let held = Held::Amqp {
                        taking: &taking,
                        tags: taken.tags,
                    };
                    shared.round(taken.messages, held, &stop).await;
                }
                Err(error) => break Some(error),
            }
        };
        metrics::gauge!(CELERY_BROKER_CONNECTED).decrement(1.0);
        match error {
            // Stopped: what the channel holds goes back as it closes.
            None => {
                taking.close().await;
                return;
            }
            Some(error) => {
                lost = true;
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, connection = name, "lost Celery's AMQP broker; connecting again");
                drop(taking);
                if !pause(wait, &stop).await {
                    return;
                }
            }
        }
    }
}
