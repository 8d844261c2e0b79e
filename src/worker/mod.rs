//! The worker: one apalis worker per job kind pulls from its queue and runs
//! each job through [`attempt`], which applies herald's retry policy (the
//! ledger counts attempts; a failure is queued again after a backoff, or
//! the job is dead). Beside them: the scan scheduler and the outbox
//! publisher that retries failed publishes.

pub mod pause;
pub mod scheduler;
mod supervise;
mod upkeep;

use std::collections::HashSet;

use chrono::Utc;

use crate::ingress::{Outcome, ResultBackend};
use crate::jobs::{Job, JobContext, JobError, JobOutcome, run_many, together_or_alone};
use crate::queue::{JobQueue, QueueError, Queued, backoff};
use crate::store::{JobState, Store, StoreError};
use crate::telemetry::metrics as m;

pub use supervise::{Stopped, Worker};

/// What every attempt needs; shared by the kind workers of one process.
#[derive(Clone)]
pub struct Runner {
    pub ctx: JobContext,
    pub queue: JobQueue,
    /// Celery's result backend, where the end of each job that came from
    /// Celery (`Queued::celery_id`) is written; `None`: no results.
    pub results: Option<ResultBackend>,
    /// With `celery.track_started`: the node name a STARTED result names
    /// when a job of Celery's starts.
    pub track_started: Option<String>,
}

/// The ledger or the queue could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The batch the entry joined ended without answering (it panicked).
    #[error("the job's batch ended without an answer")]
    BatchLost,
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
    /// The job already ended (a stale queue entry), or the entry repeats
    /// one earlier in the same batch, which runs instead.
    Skipped,
}

/// Runs one queue entry under the retry policy. An `Err` means the ledger
/// or the queue could not be written: apalis then keeps the entry and it
/// runs again later (the handlers are idempotent).
pub async fn attempt(runner: &Runner, item: Queued) -> Result<Attempted, AttemptError> {
    let mut answers = attempt_many(runner, vec![item]).await;
    answers.remove(0)
}

/// [`attempt`] for many entries at once, answering in their order: one
/// query reads their attempt numbers (and skips jobs that already ended),
/// the jobs run through [`run_many`] (one group commit), and one statement
/// records the successful attempts; failures take the retry policy one by
/// one. When a batch statement fails, each entry is tried alone, so each
/// gets its own answer.
pub async fn attempt_many(
    runner: &Runner,
    items: Vec<Queued>,
) -> Vec<Result<Attempted, AttemptError>> {
    together_or_alone(&items, |items| attempt_together(runner, items)).await
}

/// One pass over `items`. Every batch statement runs before any entry's own
/// retry or death is recorded, so a batch `Err` leaves nothing half done
/// (a job that ran is idempotent and runs again).
async fn attempt_together(
    runner: &Runner,
    items: &[Queued],
) -> Result<Vec<Result<Attempted, AttemptError>>, AttemptError> {
    let store = &runner.ctx.store;
    let ids: Vec<String> = items.iter().map(|item| item.id.clone()).collect();
    let next = store.next_job_attempts(&ids).await?; // jobs not ended yet
    // The attempt each entry runs as; `None` skips it: its job ended, or it
    // repeats an entry earlier in the batch (a queue that delivered it again).
    let mut seen = HashSet::new();
    let attempts: Vec<Option<i32>> = items
        .iter()
        .map(|item| {
            next.get(&item.id)
                .copied()
                .filter(|_| seen.insert(&item.id))
        })
        .collect();
    let runnable: Vec<(String, Job)> = items
        .iter()
        .zip(&attempts)
        .filter(|(_, attempt)| attempt.is_some())
        .map(|(item, _)| (item.id.clone(), item.job.clone()))
        .collect();
    let celery_ids: Vec<&str> = items
        .iter()
        .zip(&attempts)
        .filter(|(_, attempt)| attempt.is_some())
        .filter_map(|(item, _)| item.celery_id.as_deref())
        .collect();
    celery_started(runner, &celery_ids).await;
    let started = std::time::Instant::now();
    let mut outcomes = run_many(&runner.ctx, &runnable).await.into_iter();
    let runtime = started.elapsed().as_secs_f64();
    let results: Vec<Option<Result<JobOutcome, JobError>>> = attempts
        .iter()
        .map(|attempt| attempt.map(|_| outcomes.next().expect("one outcome per runnable job")))
        .collect();
    let done: Vec<String> = items
        .iter()
        .zip(&results)
        .filter(|(_, result)| matches!(result, Some(Ok(_))))
        .map(|(item, _)| item.id.clone())
        .collect();
    // Celery's results before the ledger's: a crash in between runs the
    // jobs again (their effects happen once) rather than losing a result.
    let succeeded = items
        .iter()
        .zip(&results)
        .filter_map(|(item, result)| match result {
            Some(Ok(outcome)) => Some((item.celery_id.clone()?, Outcome::done(outcome))),
            _ => None,
        });
    let succeeded: Vec<(String, Outcome)> = succeeded.collect();
    for (task_id, outcome) in &succeeded {
        crate::ingress::control::events::ended(task_id, outcome, Some(runtime));
    }
    store_results(runner, succeeded).await;
    store.finish_jobs_done(&done).await?;
    let mut answers = Vec::with_capacity(items.len());
    let mut dead = Vec::new();
    for ((item, attempt), result) in items.iter().zip(attempts).zip(results) {
        let answer = match (attempt, result) {
            (Some(attempt), Some(Err(error))) => {
                after_failure(runner, item.clone(), attempt, error).await
            }
            (_, Some(Ok(_))) => Ok(Attempted::Done),
            _ => Ok(Attempted::Skipped),
        };
        match (&item.celery_id, &answer) {
            (Some(task_id), Ok(Attempted::Dead { error, .. })) => {
                let outcome = Outcome::builtin("RuntimeError", error.clone());
                crate::ingress::control::events::ended(task_id, &outcome, Some(runtime));
                dead.push((task_id.clone(), outcome));
            }
            (Some(task_id), Ok(Attempted::Retrying { error, .. })) => {
                crate::ingress::control::events::retried(task_id, error);
            }
            _ => {}
        }
        answers.push(answer);
    }
    store_results(runner, dead).await;
    Ok(answers)
}

/// Celery's jobs about to run: their `task-started` events, and with
/// `celery.track_started` their STARTED results.
async fn celery_started(runner: &Runner, task_ids: &[&str]) {
    if task_ids.is_empty() {
        return;
    }
    for task_id in task_ids {
        crate::ingress::control::events::task_event(
            "task-started",
            serde_json::json!({"uuid": task_id}),
        );
    }
    if let Some(node) = &runner.track_started {
        let started: Vec<(String, Outcome)> = task_ids
            .iter()
            .map(|id| (id.to_string(), Outcome::Started(node.clone())))
            .collect();
        store_results(runner, started).await;
    }
}

/// Writes the results of Celery's jobs that ended, when results are on,
/// but for tasks sent with `ignore_result`.
async fn store_results(runner: &Runner, ended: Vec<(String, Outcome)>) {
    let Some(results) = &runner.results else {
        return;
    };
    if ended.is_empty() {
        return;
    }
    let ids: Vec<String> = ended.iter().map(|(id, _)| id.clone()).collect();
    let ignored = match runner.ctx.store.ignoring_results(&ids).await {
        Ok(ignored) => ignored,
        Err(error) => {
            // Writing one too many is better than losing one.
            tracing::warn!(%error, "could not read the ignore_result marks; writing every result");
            Default::default()
        }
    };
    let ended: Vec<(String, Outcome)> = ended
        .into_iter()
        .filter(|(id, _)| !ignored.contains(id))
        .collect();
    results.store_logged(&ended).await;
}

/// A failed attempt: queued again after its backoff, or dead after the
/// kind's last attempt (or at once when the error cannot pass).
async fn after_failure(
    runner: &Runner,
    item: Queued,
    attempt: i32,
    error: JobError,
) -> Result<Attempted, AttemptError> {
    let message = error.to_string();
    let kind = item.job.kind();
    let attempts = runner.queue.settings().attempts_of(kind) as i32;
    if !error.is_retryable() || attempt >= attempts {
        runner
            .ctx
            .store
            .record_failed_attempt(&item.id, JobState::Dead, Some(&message), None)
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
        .record_failed_attempt(&id, JobState::Retrying, Some(&message), Some(run_at))
        .await?;
    // Not queued again: the error fails this entry, so apalis keeps it.
    runner.queue.push(item, run_at).await?;
    metrics::counter!(m::JOBS, "kind" => kind, "outcome" => "retried").increment(1);
    tracing::warn!(job_id = %id, kind, attempt, ?delay, error = %message, "job failed; will retry");
    Ok(())
}

/// Entries one [`revive_given_up`] pass takes per kind.
const GIVEN_UP_PASS: usize = 1000;

/// Runs again the jobs whose queue entries apalis gave up on (see
/// [`JobQueue::given_up`]) while their ledger rows say they have not ended,
/// and deletes the given-up entries of jobs that did end; returns how many
/// went back. A job run again this way keeps its ledger row, attempts and
/// id. Each pass gives an entry apalis's tries afresh, so a store that
/// stays unwritable costs one round of tries per pass, not a busy loop.
pub async fn revive_given_up(store: &Store, queue: &JobQueue) -> Result<usize, AttemptError> {
    let given_up = queue.given_up(GIVEN_UP_PASS).await?;
    if given_up.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = given_up.iter().map(|e| e.item.id.clone()).collect();
    let open = store.next_job_attempts(&ids).await?; // jobs not ended yet
    let (revive, ended): (Vec<_>, Vec<_>) = given_up
        .into_iter()
        .partition(|e| open.contains_key(&e.item.id));
    queue.requeue_given_up(&revive).await?;
    let ended: Vec<(&'static str, String)> = ended.into_iter().map(|e| (e.kind, e.entry)).collect();
    queue.forget_given_up(&ended).await?;
    if !revive.is_empty() {
        tracing::warn!(
            revived = revive.len(),
            "jobs whose queue entries apalis gave up on run again"
        );
    }
    Ok(revive.len())
}
