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

/// A job as submitted by the API or `herald enqueue` (also one line of
/// `herald enqueue --file`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub kind: String,
    #[serde(default)]
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

/// Jobs one batch submission carries at most.
pub const MAX_BATCH: usize = 1000;

/// A batch submission failed; nothing of it was queued.
#[derive(Debug, thiserror::Error)]
#[error("{}{error}", at.map(|i| format!("jobs[{i}]: ")).unwrap_or_default())]
pub struct BatchError {
    /// The job at fault, when one is (its input was bad).
    pub at: Option<usize>,
    pub error: SubmitError,
}

impl From<SubmitError> for BatchError {
    fn from(error: SubmitError) -> Self {
        BatchError { at: None, error }
    }
}

/// Validates, records and queues a job.
pub async fn submit(
    store: &Store,
    queue: &JobQueue,
    submission: Submission,
) -> Result<Submitted, SubmitError> {
    let mut answers = submit_many(store, queue, vec![submission])
        .await
        .map_err(|batch| batch.error)?;
    Ok(answers.remove(0))
}

/// Validates, records and queues jobs, answering in their order: every job
/// is checked before any is recorded, the ledger takes them in one
/// statement per chunk and each queue in one write per chunk. A job whose
/// dedup key is taken (also by one before it in the batch) is answered with
/// the holder and not queued. On any error nothing new stays recorded.
pub async fn submit_many(
    store: &Store,
    queue: &JobQueue,
    submissions: Vec<Submission>,
) -> Result<Vec<Submitted>, BatchError> {
    let checked = submissions
        .into_iter()
        .enumerate()
        .map(|(i, submission)| check(submission).map_err(|error| BatchError { at: Some(i), error }))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = queue.settings();
    let rows: Vec<NewJob> = checked
        .iter()
        .map(|job| NewJob {
            id: &job.id,
            kind: job.job.kind(),
            payload: &job.payload,
            dedup_key: job.dedup_key.as_deref(),
            max_attempts: settings.attempts_of(job.job.kind()) as i32,
            run_at: job.run_at,
        })
        .collect();
    let recorded = store.insert_jobs(&rows).await.map_err(SubmitError::from)?;
    let mut answers = Vec::with_capacity(checked.len());
    let mut fresh = Vec::new();
    for (job, recorded) in checked.into_iter().zip(recorded) {
        match recorded {
            Recorded::Existing(holder) => answers.push(Submitted {
                id: holder.id,
                existing: true,
                state: holder.state,
            }),
            Recorded::New => {
                answers.push(Submitted {
                    id: job.id.clone(),
                    existing: false,
                    state: JobState::Queued,
                });
                let item = Queued::new(job.id, job.job, job.dedup_key.as_deref());
                fresh.push((item, job.run_at));
            }
        }
    }
    let ids: Vec<String> = fresh.iter().map(|(item, _)| item.id.clone()).collect();
    if let Err(error) = queue.push_many(fresh).await {
        // Not queued: leave no ledger row that would never run. (Entries
        // pushed before the failure then find no row and are skipped.)
        let _ = store.delete_jobs(&ids).await;
        return Err(SubmitError::from(error).into());
    }
    metrics::counter!(crate::telemetry::metrics::JOBS_SUBMITTED).increment(ids.len() as u64);
    Ok(answers)
}

/// Checks every submission as [`submit_many`] would, recording nothing.
pub fn check_all(submissions: &[Submission]) -> Result<(), BatchError> {
    for (i, submission) in submissions.iter().enumerate() {
        check(submission.clone()).map_err(|error| BatchError { at: Some(i), error })?;
    }
    Ok(())
}

/// A submission checked against its kind, with its ledger id.
struct Checked {
    id: String,
    job: jobs::Job,
    /// The payload as the kind reads it (defaults filled in).
    payload: Value,
    dedup_key: Option<String>,
    run_at: DateTime<Utc>,
}

fn check(submission: Submission) -> Result<Checked, SubmitError> {
    let job = jobs::parse(&submission.kind, submission.payload)?;
    match submission.dedup_key.as_deref() {
        Some("") => return Err(SubmitError::DedupKey("must not be empty")),
        Some(key) if key.len() > MAX_DEDUP_KEY => {
            return Err(SubmitError::DedupKey("longer than 255 bytes"));
        }
        _ => {}
    }
    let mut canonical = serde_json::to_value(&job).unwrap_or_default();
    Ok(Checked {
        id: ulid::Ulid::generate().to_string(),
        payload: canonical["payload"].take(),
        job,
        dedup_key: submission.dedup_key,
        run_at: submission.run_at.unwrap_or_else(now),
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
    let item = Queued::new(id.into(), job, record.dedup_key.as_deref());
    queue.push(item, now()).await?;
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
