//! Submitting a job: check it against its kind, record it in the ledger
//! (a repeated dedup key finds the job already recorded), then queue it.
//! Also herald's retry backoff and `herald jobs retry`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;

use super::{JobQueue, QueueError, Queued};
use crate::config::QueueSettings;
use crate::jobs::{self, JobInputError};
use crate::store::{JobState, NewJob, Recorded, Store, StoreError, now};

/// Longest dedup key accepted (the ledger column's width).
pub const MAX_DEDUP_KEY: usize = 255;

/// A job as submitted by the API or `herald enqueue`.
#[derive(Debug, Clone)]
pub struct Submission {
    pub kind: String,
    pub payload: Value,
    pub run_at: Option<DateTime<Utc>>,
    pub dedup_key: Option<String>,
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: String,
    /// True when the dedup key named a job submitted earlier; nothing new
    /// was queued.
    pub existing: bool,
    pub state: JobState,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Input(#[from] JobInputError),
    #[error("dedup_key: {0}")]
    DedupKey(&'static str),
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {state}, not dead; only dead jobs are retried")]
    NotDead { id: String, state: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Validates, records and queues a job.
pub async fn submit(
    store: &Store,
    queue: &JobQueue,
    submission: Submission,
) -> Result<Submitted, SubmitError> {
    let settings = queue.settings();
    let job = jobs::parse(&submission.kind, submission.payload)?;
    let dedup_key = submission.dedup_key.as_deref();
    match dedup_key {
        Some("") => return Err(SubmitError::DedupKey("must not be empty")),
        Some(key) if key.len() > MAX_DEDUP_KEY => {
            return Err(SubmitError::DedupKey("longer than 255 bytes"));
        }
        _ => {}
    }
    let id = ulid::Ulid::generate().to_string();
    let run_at = submission.run_at.unwrap_or_else(now);
    let canonical = serde_json::to_value(&job).unwrap_or_default();
    let recorded = store
        .insert_job(&NewJob {
            id: &id,
            kind: job.kind(),
            payload: &canonical["payload"],
            dedup_key,
            max_attempts: settings.attempts_of(job.kind()) as i32,
            run_at,
        })
        .await?;
    if let Recorded::Existing(record) = recorded {
        return Ok(Submitted {
            id: record.id,
            existing: true,
            state: record.state,
        });
    }
    let queued = Queued {
        id: id.clone(),
        job,
    };
    if let Err(error) = queue.push(queued, run_at).await {
        // Not queued: leave no ledger row that would never run.
        let _ = store.delete_job(&id).await;
        return Err(error.into());
    }
    metrics::counter!(crate::telemetry::metrics::JOBS_SUBMITTED).increment(1);
    Ok(Submitted {
        id,
        existing: false,
        state: JobState::Queued,
    })
}

/// Queues a dead job again with a fresh set of attempts.
pub async fn retry_dead(store: &Store, queue: &JobQueue, id: &str) -> Result<(), SubmitError> {
    let record = store
        .get_job(id)
        .await?
        .ok_or_else(|| SubmitError::NotFound(id.into()))?;
    if record.state != JobState::Dead || !store.revive_job(id).await? {
        return Err(SubmitError::NotDead {
            id: id.into(),
            state: record.state.as_str(),
        });
    }
    let job = jobs::parse(&record.kind, record.payload)?;
    queue.push(Queued { id: id.into(), job }, now()).await?;
    Ok(())
}

/// How long attempt `attempt` (1-based) waits before the next one:
/// exponential in the attempt, capped, with the upper half jittered.
pub fn backoff(settings: &QueueSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let cap = settings
        .retry_base
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_max);
    let half = cap / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}
