//! The job kinds: each a plain serde payload with one handler. A handler
//! decides which notifications to create; [`run`] commits them (group
//! commit, dedup keys) and publishes them through the outbox.
//!
//! Jobs run at least once; their effects happen once: every notification a
//! job makes carries a dedup key derived from the job or from the task.

pub mod catalog;
mod deadline_reminder;
mod file_attached;
mod notify;
mod overdue_check;
mod status_changed;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use deadline_reminder::DeadlineReminder;
pub use file_attached::FileAttached;
pub use notify::Notify;
pub use overdue_check::OverdueCheck;
pub use status_changed::StatusChanged;

use crate::publish::outbox::{Published, Publisher};
use crate::store::{NewNotification, Notification, ReminderWindow, Store, StoreError};
use crate::telemetry::metrics as m;

/// The kinds, as submitted in `{"kind": ..., "payload": ...}`.
pub const KINDS: [&str; 5] = [
    "deadline_reminder",
    "overdue_check",
    "file_attached",
    "status_changed",
    "notify",
];

/// A job: its kind and payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Job {
    DeadlineReminder(DeadlineReminder),
    OverdueCheck(OverdueCheck),
    FileAttached(FileAttached),
    StatusChanged(StatusChanged),
    Notify(Notify),
}

/// Why a submitted job was refused before it was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobInputError {
    #[error("unknown job kind {kind:?}; known kinds: {}", KINDS.join(", "))]
    UnknownKind { kind: String },
    #[error("payload field `{field}`: {reason}")]
    InvalidPayload { field: String, reason: String },
}

/// Why a job failed while running.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed; worth retrying.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job names a task that does not exist (yet: an application that
    /// submits inside its transaction can be faster than its commit).
    #[error("task {0} does not exist")]
    TaskNotFound(i64),
}

impl JobError {
    /// Whether another attempt could succeed: a database error may pass, and
    /// a missing task may still be committed. The retry policy bounds both.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JobError::Store(_) | JobError::TaskNotFound(_))
    }
}

/// Turns `{kind, payload}` into a job, naming the first bad field.
pub fn parse(kind: &str, payload: Value) -> Result<Job, JobInputError> {
    fn typed<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, JobInputError> {
        serde_path_to_error::deserialize(payload).map_err(|e| JobInputError::InvalidPayload {
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }
    Ok(match kind {
        "deadline_reminder" => Job::DeadlineReminder(typed(payload)?),
        "overdue_check" => Job::OverdueCheck(typed(payload)?),
        "file_attached" => Job::FileAttached(typed(payload)?),
        "status_changed" => Job::StatusChanged(typed(payload)?),
        "notify" => Job::Notify(typed(payload)?),
        other => return Err(JobInputError::UnknownKind { kind: other.into() }),
    })
}

/// What a handler needs: the store, the publisher, the scan settings, and
/// the id of the job being run (for dedup keys).
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub publisher: Publisher,
    pub reminder_offsets: Vec<Duration>,
    pub closed_statuses: Vec<String>,
    pub job_id: String,
}

impl JobContext {
    /// The configured offsets as windows, largest first.
    fn reminder_windows(&self) -> Vec<ReminderWindow> {
        let mut offsets = self.reminder_offsets.clone();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        offsets.dedup();
        offsets
            .iter()
            .enumerate()
            .map(|(i, offset)| ReminderWindow {
                offset: *offset,
                next_smaller: offsets.get(i + 1).copied().unwrap_or(Duration::ZERO),
            })
            .collect()
    }
}

/// What running a job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// Notifications this run created.
    pub created: usize,
    /// Notifications an earlier run had already created.
    pub existing: usize,
    pub published: Published,
}

/// How long a publish that failed waits before the outbox retries it.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::DeadlineReminder(_) => "deadline_reminder",
            Job::OverdueCheck(_) => "overdue_check",
            Job::FileAttached(_) => "file_attached",
            Job::StatusChanged(_) => "status_changed",
            Job::Notify(_) => "notify",
        }
    }

    /// Runs the job: its notifications are committed, then published.
    /// Counts and times the run by kind and outcome.
    pub async fn run(&self, ctx: &JobContext) -> Result<JobOutcome, JobError> {
        let started = std::time::Instant::now();
        let result = self.run_inner(ctx).await;
        let kind = self.kind();
        let outcome = if result.is_ok() { "done" } else { "failed" };
        metrics::counter!(m::JOBS, "kind" => kind, "outcome" => outcome).increment(1);
        metrics::histogram!(m::JOB_DURATION, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        if let Ok(done) = &result {
            metrics::counter!(m::NOTIFICATIONS_CREATED).increment(done.created as u64);
        }
        result
    }

    async fn run_inner(&self, ctx: &JobContext) -> Result<JobOutcome, JobError> {
        let (created, existing) = match self {
            Job::DeadlineReminder(job) => (job.scan(ctx).await?, 0),
            Job::OverdueCheck(job) => (job.scan(ctx).await?, 0),
            Job::FileAttached(job) => commit(ctx, job.notifications(ctx).await?).await?,
            Job::StatusChanged(job) => commit(ctx, job.notifications(ctx).await?).await?,
            Job::Notify(job) => commit(ctx, vec![job.notification(&ctx.job_id)]).await?,
        };
        let published = ctx.publisher.publish(&created, FIRST_RETRY).await?;
        Ok(JobOutcome {
            created: created.len(),
            existing,
            published,
        })
    }
}

/// Stores the notifications; returns the new rows and how many existed.
async fn commit(
    ctx: &JobContext,
    batch: Vec<NewNotification>,
) -> Result<(Vec<Notification>, usize), JobError> {
    let mut created = Vec::new();
    let mut existing = 0;
    for outcome in ctx.store.create_notifications(&batch).await? {
        if outcome.is_new() {
            created.push(outcome.into_inner());
        } else {
            existing += 1;
        }
    }
    Ok((created, existing))
}

/// The task a job is about, or the permanent `TaskNotFound`.
async fn load_task(ctx: &JobContext, task_id: i64) -> Result<crate::store::Task, JobError> {
    ctx.store
        .get_task(task_id)
        .await?
        .ok_or(JobError::TaskNotFound(task_id))
}

/// Assignee and creator of a task, without `actor`, without repeats.
fn recipients(task: &crate::store::Task, actor: i64) -> Vec<i64> {
    let mut users: Vec<i64> = [task.assignee_id, task.created_by_id]
        .into_iter()
        .flatten()
        .filter(|user| *user != actor)
        .collect();
    users.dedup();
    users
}
