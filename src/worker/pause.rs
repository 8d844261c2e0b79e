//! Paused job kinds (`herald_paused_kinds`, set from the dashboard): each
//! worker process reads the set when it starts and then every second, and
//! honours it. A paused kind's apalis worker is stopped (what it had
//! fetched and not started goes back to the queue), its scheduled scans
//! are skipped, and an entry that reaches the handler anyway is queued
//! again unrun. Its jobs stay `queued` in the ledger and run after resume.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often each worker process reads the paused kinds.
pub const POLL: Duration = Duration::from_secs(1);

/// The paused kinds as this process last read them; cheap to clone.
#[derive(Clone)]
pub struct Paused(watch::Sender<BTreeSet<String>>);

impl Paused {
    /// Reads the set now; a failed read (a database not yet migrated)
    /// pauses nothing until the next read.
    pub async fn load(store: &Store) -> Paused {
        let paused = Paused(watch::Sender::new(BTreeSet::new()));
        paused.refresh(store).await;
        paused
    }

    /// Whether `kind` is paused.
    pub fn is_paused(&self, kind: &str) -> bool {
        self.0.borrow().contains(kind)
    }

    /// Reads the set again.
    pub async fn refresh(&self, store: &Store) {
        match store.paused_kinds().await {
            Ok(kinds) => {
                let kinds: BTreeSet<String> = kinds.into_iter().collect();
                self.0.send_if_modified(|now| {
                    let changed = *now != kinds;
                    if changed {
                        tracing::info!(paused = ?kinds, "paused job kinds changed");
                        *now = kinds;
                    }
                    changed
                });
            }
            Err(error) => tracing::debug!(%error, "could not read the paused job kinds"),
        }
    }

    /// Waits until `kind` is paused (now or later).
    pub async fn until_paused(&self, kind: &str) {
        let mut changes = self.0.subscribe();
        let _ = changes.wait_for(|kinds| kinds.contains(kind)).await;
    }

    /// Waits until `kind` is not paused.
    pub async fn until_resumed(&self, kind: &str) {
        let mut changes = self.0.subscribe();
        let _ = changes.wait_for(|kinds| !kinds.contains(kind)).await;
    }

    /// Reads the set every [`POLL`] until `stop`.
    pub async fn poll(self, store: Store, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => self.refresh(&store).await,
                () = stop.cancelled() => return,
            }
        }
    }
}
