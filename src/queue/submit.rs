//! Submitting a job: check it against its kind, record it in the ledger
//! (a repeated dedup key finds the job already recorded), then queue it.
//! Also herald's retry backoff and `herald jobs retry`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;

use super::{JobQueue, QueueError, Queued};
use crate::batch::Batcher;
use crate::config::QueueSettings;
use crate::jobs::{self, JobInputError};
use crate::retry::Backoff;
use crate::store::{ColumnLimits, JobState, NewJob, Recorded, Store, StoreError, now};

/// Longest dedup key accepted, in characters (Unicode code points, as the
/// ledger's `varchar(255)` and JSON Schema's `maxLength` count them).
pub const MAX_DEDUP_KEY: usize = 255;

/// Furthest ahead a job may be scheduled.
pub const MAX_DELAY: chrono::TimeDelta = chrono::TimeDelta::days(366);

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
    #[error("run_at: {0}")]
    RunAt(&'static str),
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {state}, not dead; only dead jobs are retried")]
    NotDead { id: String, state: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database failed for a group of submissions this one joined.
    #[error("{0}")]
    Unavailable(String),
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

/// Single submissions from many callers at once (the API's `POST
/// /api/jobs`), recorded together: whatever arrives while a group is being
/// written joins the next one (see [`crate::batch`]), so concurrent requests
/// share one ledger statement, one commit and one queue write. Each caller
/// still gets its own answer, and a bad submission fails alone.
#[derive(Clone)]
pub struct Submitter {
    batcher: Arc<Batcher<Submission, Result<Submitted, SubmitError>>>,
}

/// Clears unqueued marks off the answers' path: the marks of every group
/// written meanwhile go in one statement. (A mark outliving a crash only
/// makes the requeue pass queue its job a second time.)
type MarkClearer = Batcher<Vec<String>, ()>;

/// Groups written at once; the SQLite store has one writer.
const PARALLEL_GROUPS: usize = 4;

impl Submitter {
    pub fn new(store: Store, queue: JobQueue) -> Self {
        let parallel = match store.backend() {
            crate::store::Backend::Sqlite => 1,
            crate::store::Backend::Postgres => PARALLEL_GROUPS,
        };
        let clearer = {
            let store = store.clone();
            Arc::new(MarkClearer::spawn(MAX_BATCH, 1, move |groups| {
                let store = store.clone();
                async move {
                    let count = groups.len();
                    clear_marks(&store, &groups.concat()).await;
                    vec![(); count]
                }
            }))
        };
        let batcher = Batcher::spawn(MAX_BATCH, parallel, move |items| {
            let (store, queue, clearer) = (store.clone(), queue.clone(), clearer.clone());
            async move { submit_group(&store, &queue, &clearer, items).await }
        });
        Submitter {
            batcher: Arc::new(batcher),
        }
    }

    /// Validates, records and queues one job, with others arriving now.
    pub async fn submit(&self, submission: Submission) -> Result<Submitted, SubmitError> {
        self.batcher.call(submission).await.unwrap_or_else(|| {
            Err(SubmitError::Unavailable(
                "the submission's group ended without an answer; try again".into(),
            ))
        })
    }
}

/// [`submit_many`] for submissions of different callers: a bad one is
/// answered alone and the rest are submitted without it; a database
/// failure answers every one.
async fn submit_group(
    store: &Store,
    queue: &JobQueue,
    clearer: &Arc<MarkClearer>,
    items: Vec<Submission>,
) -> Vec<Result<Submitted, SubmitError>> {
    let mut answers: Vec<Option<Result<Submitted, SubmitError>>> =
        items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let group = pending.iter().map(|i| items[*i].clone()).collect();
        match record_and_push(store, queue, group).await {
            Ok((done, queued)) => {
                for (i, submitted) in pending.iter().zip(done) {
                    answers[*i] = Some(Ok(submitted));
                }
                let clearer = clearer.clone();
                tokio::spawn(async move { clearer.call(queued).await });
                break;
            }
            Err(BatchError { at: Some(k), error }) => {
                answers[pending.remove(k)] = Some(Err(error));
            }
            Err(BatchError { at: None, error }) => {
                let reason = error.to_string();
                for i in pending.drain(..) {
                    answers[i] = Some(Err(SubmitError::Unavailable(reason.clone())));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.expect("every submission answered"))
        .collect()
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
    let (answers, queued) = record_and_push(store, queue, submissions).await?;
    clear_marks(store, &queued).await;
    Ok(answers)
}

/// [`submit_many`] up to the push: the answers, and the ids the queue took
/// (whose unqueued marks are to be cleared).
async fn record_and_push(
    store: &Store,
    queue: &JobQueue,
    submissions: Vec<Submission>,
) -> Result<(Vec<Submitted>, Vec<String>), BatchError> {
    let limits = store.column_limits().await.map_err(SubmitError::from)?;
    let checked = match check_each(&submissions, &limits) {
        // Refused by limits read a while ago: a migration may have widened
        // the column since. Refuse only on what the database says now.
        Err(BatchError {
            error: SubmitError::Input(JobInputError::OverLimit { .. }),
            ..
        }) => {
            let fresh = store
                .fresh_column_limits()
                .await
                .map_err(SubmitError::from)?;
            check_each(&submissions, &fresh)?
        }
        checked => checked?,
    };
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
    metrics::counter!(crate::telemetry::metrics::JOBS_SUBMITTED).increment(ids.len() as u64);
    Ok((answers, push_recorded(queue, fresh, ids).await))
}

/// Queues jobs the ledger holds (marked unqueued in the same transaction);
/// answers the ids the queue took, whose marks are to be cleared. A failure
/// is only logged: the jobs are durable and the worker's requeue pass
/// queues them once the queue answers ([`requeue_unqueued`]).
async fn push_recorded(
    queue: &JobQueue,
    items: Vec<(Queued, DateTime<Utc>)>,
    ids: Vec<String>,
) -> Vec<String> {
    if items.is_empty() {
        return Vec::new();
    }
    if let Err(error) = queue.push_many(items).await {
        tracing::warn!(%error, jobs = ids.len(), "recorded jobs not queued yet; the worker will queue them");
        return Vec::new();
    }
    ids
}

/// Clears the unqueued marks of jobs the queue took. A failure is only
/// logged: the requeue pass then queues such a job a second time, and the
/// ledger runs its effects once.
async fn clear_marks(store: &Store, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    if let Err(error) = store.mark_queued(ids).await {
        tracing::warn!(%error, jobs = ids.len(), "queued jobs still marked unqueued");
    }
}

/// How long a job may stay marked unqueued before a worker queues it: its
/// submitter's own push normally clears the mark within milliseconds.
pub const REQUEUE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Queues again the jobs recorded but left unqueued (a failed push, or a
/// process that died between the ledger and the queue); answers how many.
/// Each is claimed for a while, so several workers take different ones.
pub async fn requeue_unqueued(store: &Store, queue: &JobQueue) -> Result<usize, SubmitError> {
    let at = now();
    let lease = at + REQUEUE_AFTER * 3;
    let jobs = store.claim_unqueued(at - REQUEUE_AFTER, lease, 500).await?;
    let mut items = Vec::with_capacity(jobs.len());
    let mut ids = Vec::with_capacity(jobs.len());
    for record in jobs {
        match jobs::parse(&record.kind, record.payload.clone()) {
            Ok(job) => {
                ids.push(record.id.clone());
                let item = Queued::new(record.id, job, record.dedup_key.as_deref());
                items.push((item, record.run_at));
            }
            Err(error) => {
                tracing::error!(job_id = %record.id, %error, "a recorded job no longer parses")
            }
        }
    }
    queue.push_many(items).await?;
    store.mark_queued(&ids).await?;
    Ok(ids.len())
}

/// Checks every submission as [`submit_many`] would, recording nothing.
pub fn check_all(submissions: &[Submission], limits: &ColumnLimits) -> Result<(), BatchError> {
    check_each(submissions, limits).map(drop)
}

fn check_each(
    submissions: &[Submission],
    limits: &ColumnLimits,
) -> Result<Vec<Checked>, BatchError> {
    submissions
        .iter()
        .enumerate()
        .map(|(i, submission)| {
            check(submission.clone(), limits).map_err(|error| BatchError { at: Some(i), error })
        })
        .collect()
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

fn check(submission: Submission, limits: &ColumnLimits) -> Result<Checked, SubmitError> {
    let job = jobs::parse(&submission.kind, submission.payload)?;
    job.check_limits(limits)?;
    match submission.dedup_key.as_deref() {
        Some("") => return Err(SubmitError::DedupKey("must not be empty")),
        Some(key) if key.chars().count() > MAX_DEDUP_KEY => {
            return Err(SubmitError::DedupKey("longer than 255 characters"));
        }
        Some(key) if key.contains('\0') => {
            return Err(SubmitError::DedupKey("contains a NUL character"));
        }
        _ => {}
    }
    if let Some(run_at) = submission.run_at
        && run_at > now() + MAX_DELAY
    {
        return Err(SubmitError::RunAt("more than 366 days ahead"));
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

/// Queues a dead job again with a fresh set of attempts: revived and marked
/// unqueued in one transaction, then pushed (or left to the requeue pass).
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
    let item = (
        Queued::new(id.into(), job, record.dedup_key.as_deref()),
        now(),
    );
    let queued = push_recorded(queue, vec![item], vec![id.to_string()]).await;
    clear_marks(store, &queued).await;
    Ok(())
}

/// How long attempt `attempt` (1-based) waits before the next one:
/// exponential in the attempt, capped, with the upper half jittered.
pub fn backoff(settings: &QueueSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let cap = Backoff::new(settings.retry_base, settings.retry_max).nth_delay(exponent);
    let half = cap / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}
