//! Publishing committed notifications without losing any: the job that
//! committed rows publishes them at once and clears their outbox entry;
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
use crate::retry::Backoff;
use crate::store::{Notification, Store, StoreError, Unpublished};
use crate::telemetry::metrics as m;

/// Notifications one layer call sends together.
const SEND_CHUNK: usize = 500;
/// Outbox entries one retry pass claims.
const RETRY_BATCH: usize = 1000;

/// How long a retry pass holds the entries it claimed: past it, another
/// pass (of any process) may take them, as when this one died.
const CLAIM_LEASE: TimeDelta = TimeDelta::seconds(60);

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

    /// Publishes committed groups: an entry all of whose rows went out
    /// leaves the outbox; one with failures keeps those, tried again after
    /// `retry_in`.
    pub async fn publish(
        &self,
        groups: &[Unpublished],
        retry_in: Duration,
    ) -> Result<Published, StoreError> {
        let failed = self.publish_groups(groups, retry_in).await?;
        let rows: usize = groups.iter().map(|group| group.rows.len()).sum();
        Ok(Published {
            sent: rows - failed.len(),
            failed: failed.len(),
        })
    }

    /// [`Publisher::publish`], answering the ids of the rows that failed.
    pub async fn publish_groups(
        &self,
        groups: &[Unpublished],
        retry_in: Duration,
    ) -> Result<HashSet<i64>, StoreError> {
        let rows: Vec<&Notification> = groups.iter().flat_map(|group| &group.rows).collect();
        let mut failed = HashSet::new();
        for rows in rows.chunks(SEND_CHUNK) {
            let payloads: Vec<NotificationPayload> = rows
                .iter()
                .map(|row| NotificationPayload::from(*row))
                .collect();
            let notifications: Vec<(i64, &NotificationPayload)> =
                rows.iter().map(|row| row.user_id).zip(&payloads).collect();
            let sent = send_notifications_ws(self.layer.as_ref(), &notifications).await;
            for (row, sent) in rows.iter().zip(sent) {
                if sent.is_err() {
                    failed.insert(row.id);
                }
            }
        }
        metrics::counter!(m::NOTIFICATIONS_PUBLISHED).increment((rows.len() - failed.len()) as u64);
        metrics::counter!(m::NOTIFICATIONS_PUBLISH_FAILED).increment(failed.len() as u64);
        self.settle(groups, &failed, retry_in).await?;
        Ok(failed)
    }

    /// Clears the entries that went out and keeps the failures of the rest.
    async fn settle(
        &self,
        groups: &[Unpublished],
        failed: &HashSet<i64>,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let retry_at =
            crate::store::now() + TimeDelta::from_std(retry_in).unwrap_or(TimeDelta::seconds(1));
        let mut done = Vec::new();
        for group in groups {
            let Some(entry) = group.entry else { continue };
            let left: Vec<i64> = group
                .rows
                .iter()
                .map(|row| row.id)
                .filter(|id| failed.contains(id))
                .collect();
            if left.is_empty() {
                done.push(entry);
            } else {
                self.store.outbox_retry_at(entry, &left, retry_at).await?;
            }
        }
        self.store.outbox_done(&done).await
    }

    /// One pass over the outbox entries that are due.
    pub async fn retry_due(&self, retry_in: Duration) -> Result<Published, StoreError> {
        let due = self.store.outbox_due(RETRY_BATCH, CLAIM_LEASE).await?;
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
        let mut retry_in = Backoff::new(every, Duration::from_secs(60));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            match self.retry_due(retry_in.delay()).await {
                Ok(outcome) if outcome.failed > 0 => {
                    retry_in.next_delay();
                }
                Ok(_) => retry_in.reset(),
                Err(error) => tracing::warn!(%error, "outbox retry pass failed"),
            }
        }
    }
}
