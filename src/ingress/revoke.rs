//! Revoking Celery tasks, whoever asks (a remote-control broadcast from
//! `AsyncResult.revoke()` or `celery control revoke`, herald's API): the
//! ids go into the database, where every herald process (and every one
//! started later) honours them until `celery.revoke_expires`; a task's job
//! still waiting (a countdown in the ledger) is cancelled; and its result
//! becomes REVOKED at once, as Celery 5.7's worker writes it when the
//! broadcast reaches it, unless the task is running or has ended.

use std::time::Duration;

use super::{Outcome, ResultBackend};
use crate::store::{Revoked, Store, StoreError};

/// The longest task id a revoke keeps.
const MAX_ID: usize = 255;

/// Revokes tasks for one herald process.
#[derive(Clone)]
pub struct Revoker {
    store: Store,
    results: Option<ResultBackend>,
    keep: Duration,
}

impl Revoker {
    pub fn new(store: Store, results: Option<ResultBackend>, keep: Duration) -> Revoker {
        Revoker {
            store,
            results,
            keep,
        }
    }

    /// The store revokes are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Revokes `task_ids`. A job already running is not stopped (herald
    /// cannot stop one safely in the middle of its writes), `terminate` or
    /// not: it is among [`Revoked::past`].
    pub async fn revoke(
        &self,
        task_ids: &[String],
        terminate: bool,
    ) -> Result<Revoked, StoreError> {
        let keep = chrono::TimeDelta::from_std(self.keep).unwrap_or(chrono::TimeDelta::hours(3));
        let expires_at = crate::store::now() + keep;
        // An id longer than herald records (`herald_celery_revoked`, and the
        // dedup key's limit) names no job and no message herald would take.
        let (kept, too_long): (Vec<String>, Vec<String>) = task_ids
            .iter()
            .cloned()
            .partition(|id| id.chars().count() <= MAX_ID);
        let mut revoked = self
            .store
            .revoke_tasks(&kept, expires_at, terminate)
            .await?;
        revoked.unseen.extend(too_long);
        if let Some(results) = &self.results {
            let ended: Vec<(String, Outcome)> = revoked
                .cancelled
                .iter()
                .chain(&revoked.unseen)
                .map(|id| (id.clone(), Outcome::Revoked("revoked".into())))
                .collect();
            results.store_logged(&ended).await;
        }
        for id in &revoked.cancelled {
            super::control::events::ended(id, &Outcome::Revoked("revoked".into()), None);
        }
        if !revoked.cancelled.is_empty() {
            tracing::info!(
                cancelled = revoked.cancelled.len(),
                "revoked Celery tasks: their waiting jobs are cancelled"
            );
        }
        Ok(revoked)
    }
}
