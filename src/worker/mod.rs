//! The worker: one apalis worker per job kind pulls from its queue and runs
//! each job through [`attempt`], which applies herald's retry policy (the
//! ledger counts attempts; a failure is queued again after a backoff, or
//! the job is dead). Beside them: the scan scheduler and the outbox
//! publisher that retries failed publishes.

pub mod scheduler;
mod supervise;

use chrono::Utc;

use crate::jobs::{JobContext, JobError};
use crate::queue::{JobQueue, QueueError, Queued, backoff};
use crate::store::{JobState, StoreError};
use crate::telemetry::metrics as m;

pub use supervise::{Worker, run};

/// What every attempt needs; shared by the kind workers of one process.
pub struct Runner {
    pub ctx: JobContext,
    pub queue: JobQueue,
}

/// The ledger or the queue could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    Done,
    /// Failed; queued again to run after the backoff.
    Retrying {
        attempt: i32,
        error: String,
    },
    Dead {
        attempt: i32,
        error: String,
    },
    /// The ledger says the job already finished (a duplicate queue entry).
    Skipped,
}

/// Runs one queue entry under the retry policy. An `Err` means the ledger
/// or the queue could not be written: apalis then keeps the entry and it
/// runs again later (the handlers are idempotent).
pub async fn attempt(runner: &Runner, item: Queued) -> Result<Attempted, AttemptError> {
    let store = &runner.ctx.store;
    let Some(attempt) = store.start_job_attempt(&item.id).await? else {
        return Ok(Attempted::Skipped);
    };
    let mut ctx = runner.ctx.clone();
    ctx.job_id = item.id.clone();
    let kind = item.job.kind();
    let error = match item.job.run(&ctx).await {
        Ok(_) => {
            store
                .finish_job_attempt(&item.id, JobState::Done, None, None)
                .await?;
            return Ok(Attempted::Done);
        }
        Err(error) => error,
    };
    let message = error.to_string();
    let attempts = runner.queue.settings().attempts_of(kind) as i32;
    if !error.is_retryable() || attempt >= attempts {
        store
            .finish_job_attempt(&item.id, JobState::Dead, Some(&message), None)
            .await?;
        metrics::counter!(m::JOBS, "kind" => kind, "outcome" => "dead").increment(1);
        tracing::error!(job_id = %item.id, kind, attempt, error = %message, "job is dead");
        return Ok(Attempted::Dead {
            attempt,
            error: message,
        });
    }
    retry_later(runner, item, attempt, &error).await?;
    Ok(Attempted::Retrying {
        attempt,
        error: message,
    })
}

/// Queues `item` again after the backoff for `attempt`.
async fn retry_later(
    runner: &Runner,
    item: Queued,
    attempt: i32,
    error: &JobError,
) -> Result<(), AttemptError> {
    let delay = backoff(runner.queue.settings(), attempt as u32);
    let run_at = Utc::now() + delay;
    let (id, kind) = (item.id.clone(), item.job.kind());
    let message = error.to_string();
    runner
        .ctx
        .store
        .finish_job_attempt(&id, JobState::Retrying, Some(&message), Some(run_at))
        .await?;
    // Not queued again: the error fails this entry, so apalis keeps it.
    runner.queue.push(item, run_at).await?;
    metrics::counter!(m::JOBS, "kind" => kind, "outcome" => "retried").increment(1);
    tracing::warn!(job_id = %id, kind, attempt, ?delay, error = %message, "job failed; will retry");
    Ok(())
}
