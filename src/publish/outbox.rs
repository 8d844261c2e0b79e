//! Publishing committed notifications without losing any: the job that
//! committed rows publishes them at once and clears their outbox entries;
//! whatever failed (Redis down) or was stranded (a crash between commit and
//! publish) is retried by [`Publisher::run`] with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::layer::ChannelLayer;
use crate::payload::NotificationPayload;
use crate::publish::send_notifications_ws;
use crate::store::{Notification, Store, StoreError};
use crate::telemetry::metrics as m;

/// Notifications one layer call sends together.
const SEND_CHUNK: usize = 500;
/// Rows one retry pass takes.
const RETRY_BATCH: i64 = 1000;

/// What one publish pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub sent: usize,
    pub failed: usize,
}

#[derive(Clone)]
pub struct Publisher {
    store: Store,
    layer: Arc<dyn ChannelLayer>,
}

impl Publisher {
    pub fn new(store: Store, layer: Arc<dyn ChannelLayer>) -> Self {
        Self { store, layer }
    }

    /// Publishes committed rows; those sent leave the outbox, those that
    /// failed stay in it and are tried again after `retry_in`.
    pub async fn publish(
        &self,
        rows: &[Notification],
        retry_in: Duration,
    ) -> Result<Published, StoreError> {
        let failed = self.publish_rows(rows, retry_in).await?;
        Ok(Published {
            sent: rows.len() - failed.len(),
            failed: failed.len(),
        })
    }

    /// [`Publisher::publish`], answering the ids of the rows that failed.
    pub async fn publish_rows(
        &self,
        rows: &[Notification],
        retry_in: Duration,
    ) -> Result<HashSet<i64>, StoreError> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let payloads: Vec<NotificationPayload> =
            rows.iter().map(NotificationPayload::from).collect();
        let mut results = Vec::with_capacity(rows.len());
        for (rows, payloads) in rows.chunks(SEND_CHUNK).zip(payloads.chunks(SEND_CHUNK)) {
            let notifications: Vec<(i64, &NotificationPayload)> =
                rows.iter().map(|row| row.user_id).zip(payloads).collect();
            let sent = send_notifications_ws(self.layer.as_ref(), &notifications).await;
            results.extend(
                rows.iter()
                    .zip(sent)
                    .map(|(row, sent)| (row.id, sent.is_ok())),
            );
        }
        let (sent, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, ok)| *ok);
        let sent: Vec<i64> = sent.into_iter().map(|(id, _)| id).collect();
        let failed: Vec<i64> = failed.into_iter().map(|(id, _)| id).collect();
        metrics::counter!(m::NOTIFICATIONS_PUBLISHED).increment(sent.len() as u64);
        metrics::counter!(m::NOTIFICATIONS_PUBLISH_FAILED).increment(failed.len() as u64);
        self.store.outbox_done(&sent).await?;
        let retry_at =
            crate::store::now() + TimeDelta::from_std(retry_in).unwrap_or(TimeDelta::seconds(1));
        self.store.outbox_retry_at(&failed, retry_at).await?;
        Ok(failed.into_iter().collect())
    }

    /// One pass over the outbox rows that are due.
    pub async fn retry_due(&self, retry_in: Duration) -> Result<Published, StoreError> {
        let due = self.store.outbox_due(RETRY_BATCH).await?;
        if due.is_empty() {
            return Ok(Published::default());
        }
        let outcome = self.publish(&due, retry_in).await?;
        tracing::info!(
            sent = outcome.sent,
            failed = outcome.failed,
            "outbox retry pass"
        );
        Ok(outcome)
    }

    /// Retries due rows every `every` until `stop`; after a failed pass the
    /// next try waits longer (doubling up to a minute).
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        let mut retry_in = every;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            match self.retry_due(retry_in).await {
                Ok(outcome) if outcome.failed > 0 => {
                    retry_in = (retry_in * 2).min(Duration::from_secs(60))
                }
                Ok(_) => retry_in = every,
                Err(error) => tracing::warn!(%error, "outbox retry pass failed"),
            }
        }
    }
}
