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
pub mod schedule;
mod status_changed;
mod validate;

use std::collections::HashMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use deadline_reminder::DeadlineReminder;
pub use file_attached::FileAttached;
pub use notify::Notify;
pub use overdue_check::OverdueCheck;
pub use status_changed::StatusChanged;

use crate::config::NotificationTypes;
use crate::publish::outbox::{Published, Publisher};
use crate::store::{
    Inserted, NewNotification, ReminderWindow, Store, StoreError, Task, Unpublished,
};
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
    /// The payload fits the kind's schema but not the database's columns
    /// (a NUL character, a text too long, an id out of range).
    #[error("payload field `{field}`: {reason}")]
    OverLimit { field: String, reason: String },
}

/// Why a job failed while running.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed (worth retrying), or refused the data (not).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job names a task that does not exist (yet: an application that
    /// submits inside its transaction can be faster than its commit).
    #[error("task {0} does not exist")]
    TaskNotFound(i64),
}

impl JobInputError {
    /// The payload field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            JobInputError::InvalidPayload { field, .. }
            | JobInputError::OverLimit { field, .. } => Some(field),
            JobInputError::UnknownKind { .. } => None,
        }
    }
}

impl JobError {
    /// Whether another attempt could succeed: a database error may pass, and
    /// a missing task may still be committed. The retry policy bounds both.
    pub fn is_retryable(&self) -> bool {
        match self {
            JobError::Store(error) => !error.is_permanent(),
            JobError::TaskNotFound(_) => true,
        }
    }
}

/// Turns `{kind, payload}` into a job, naming the first bad field.
///
/// A payload is a JSON object (serde would also read an array as the
/// fields in order, which the schemas do not allow); a number with no
/// fraction (`5.0`, `1e3`) in one of its fields counts as that integer, as
/// JSON Schema's `integer` does (`data` is kept as given).
pub fn parse(kind: &str, payload: Value) -> Result<Job, JobInputError> {
    fn typed<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, JobInputError> {
        let Value::Object(mut fields) = payload else {
            return Err(JobInputError::InvalidPayload {
                field: String::new(),
                reason: "the payload must be a JSON object".into(),
            });
        };
        for (name, value) in fields.iter_mut() {
            if name != "data" {
                *value = integral(std::mem::take(value));
            }
        }
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
            let reason = e.inner().to_string();
            JobInputError::InvalidPayload {
                field: field_named(&e.path().to_string(), &reason),
                reason,
            }
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

/// `5.0` as `5`: a float with no fraction that an i64 holds exactly.
fn integral(value: Value) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: floats are exact below
    match value.as_f64() {
        Some(f) if value.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT => Value::from(f as i64),
        _ => value,
    }
}

/// The field a payload error is about. serde reports a missing field at the
/// path of the object that lacks it (`.` at the top), so its name is taken
/// from the message: "missing field `title`".
fn field_named(path: &str, reason: &str) -> String {
    let named = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_string(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_string(),
    }
}

/// What a handler needs: the store, the publisher, the scan settings, and
/// the id of the job being run (for dedup keys).
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub publisher: Publisher,
    pub reminder_offsets: Vec<Duration>,
    pub closed_statuses: Vec<String>,
    /// The `type` each kind's notifications get.
    pub notification_types: NotificationTypes,
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

    /// Whether the job is a set-based scan (long, run alone) rather than an
    /// event (short, run in batches).
    pub fn is_scan(&self) -> bool {
        matches!(self, Job::DeadlineReminder(_) | Job::OverdueCheck(_))
    }

    /// Runs the job (as `ctx.job_id`): its notifications are committed,
    /// then published.
    pub async fn run(&self, ctx: &JobContext) -> Result<JobOutcome, JobError> {
        let mut results = run_many(ctx, &[(ctx.job_id.clone(), self.clone())]).await;
        results.remove(0)
    }

    /// The task an event is about.
    fn task_id(&self) -> Option<i64> {
        match self {
            Job::FileAttached(job) => Some(job.task_id),
            Job::StatusChanged(job) => Some(job.task_id),
            _ => None,
        }
    }

    /// An event's notifications, given the tasks read for its batch.
    fn notifications(
        &self,
        job_id: &str,
        tasks: &HashMap<i64, Task>,
        types: &NotificationTypes,
    ) -> Result<Vec<NewNotification>, JobError> {
        let task = |id| tasks.get(&id).ok_or(JobError::TaskNotFound(id));
        Ok(match self {
            Job::FileAttached(job) => job.notifications(task(job.task_id)?, &types.file_attached),
            Job::StatusChanged(job) => {
                job.notifications(task(job.task_id)?, job_id, &types.status_changed)
            }
            Job::Notify(job) => vec![job.notification(job_id)],
            Job::DeadlineReminder(_) | Job::OverdueCheck(_) => Vec::new(),
        })
    }

    /// A scan's new notifications, committed and not yet published.
    async fn scan(&self, ctx: &JobContext) -> Result<Vec<Unpublished>, JobError> {
        match self {
            Job::DeadlineReminder(job) => job.scan(ctx).await,
            Job::OverdueCheck(job) => job.scan(ctx).await,
            _ => Ok(Vec::new()),
        }
    }
}

/// Runs `(job id, job)` pairs together and answers in their order: the
/// events' tasks are read in one query, their notifications committed in
/// one transaction (a group commit) and published together; scans run one
/// after another. When the batch as a whole fails (the database), each job
/// runs again alone, so each gets its own outcome. Counts and times every
/// job by kind and outcome.
pub async fn run_many(
    ctx: &JobContext,
    jobs: &[(String, Job)],
) -> Vec<Result<JobOutcome, JobError>> {
    let started = std::time::Instant::now();
    let results = together_or_alone(jobs, |jobs| run_together(ctx, jobs)).await;
    let elapsed = started.elapsed().as_secs_f64();
    for ((_, job), result) in jobs.iter().zip(&results) {
        let kind = job.kind();
        let outcome = if result.is_ok() { "done" } else { "failed" };
        metrics::counter!(m::JOBS, "kind" => kind, "outcome" => outcome).increment(1);
        metrics::histogram!(m::JOB_DURATION, "kind" => kind).record(elapsed);
        if let Ok(done) = result {
            metrics::counter!(m::NOTIFICATIONS_CREATED).increment(done.created as u64);
        }
    }
    results
}

/// Runs `items` through `together`; when that fails as a whole (a batch
/// statement), runs each item alone, so each gets its own answer. A batch
/// of one answers with the batch's error.
pub(crate) async fn together_or_alone<'a, T, R, E, F, Fut>(
    items: &'a [T],
    together: F,
) -> Vec<Result<R, E>>
where
    F: Fn(&'a [T]) -> Fut,
    Fut: Future<Output = Result<Vec<Result<R, E>>, E>>,
    E: std::fmt::Display,
{
    match together(items).await {
        Ok(answers) => answers,
        Err(error) if items.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(%error, jobs = items.len(), "job batch failed; trying its jobs one by one");
            let mut answers = Vec::with_capacity(items.len());
            for item in items {
                let alone = together(std::slice::from_ref(item)).await;
                answers.push(alone.and_then(|mut answer| answer.remove(0)));
            }
            answers
        }
    }
}

/// What one job of a batch came to before publishing.
enum Part {
    /// The ids of its new rows and how many existed already.
    Rows(Vec<i64>, usize),
    /// Its notifications are `batch[range]` of the group commit.
    Pending(std::ops::Range<usize>),
    Failed(JobError),
}

/// One pass over `jobs`; an `Err` is the batch's, a job's own failure (its
/// task is missing, its scan failed) is its entry.
async fn run_together(
    ctx: &JobContext,
    jobs: &[(String, Job)],
) -> Result<Vec<Result<JobOutcome, JobError>>, JobError> {
    let mut task_ids: Vec<i64> = jobs.iter().filter_map(|(_, job)| job.task_id()).collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    let tasks = ctx.store.get_tasks(&task_ids).await?;
    let mut batch = Vec::new();
    let mut groups = Vec::new(); // committed, to publish
    let mut parts = Vec::with_capacity(jobs.len());
    for (id, job) in jobs {
        let part = if job.is_scan() {
            match job.scan(ctx).await {
                Ok(scanned) => {
                    let ids = scanned.iter().flat_map(|group| &group.rows);
                    let part = Part::Rows(ids.map(|row| row.id).collect(), 0);
                    groups.extend(scanned);
                    part
                }
                Err(error) => Part::Failed(error),
            }
        } else {
            match job.notifications(id, &tasks, &ctx.notification_types) {
                Ok(new) => {
                    let start = batch.len();
                    batch.extend(new);
                    Part::Pending(start..batch.len())
                }
                Err(error) => Part::Failed(error),
            }
        };
        parts.push(part);
    }
    let created = ctx.store.create_notifications(&batch).await?;
    let mut answers = created.answers.into_iter();
    for part in &mut parts {
        if let Part::Pending(range) = part {
            let (mut new, mut existing) = (Vec::new(), 0);
            for answer in answers.by_ref().take(range.len()) {
                match answer {
                    Inserted::New(row) => new.push(row.id),
                    Inserted::Existing(_) => existing += 1,
                }
            }
            *part = Part::Rows(new, existing);
        }
    }
    groups.push(created.unpublished);
    let unsent = ctx.publisher.publish_groups(&groups, FIRST_RETRY).await?;
    Ok(parts
        .into_iter()
        .map(|part| match part {
            Part::Rows(created, existing) => {
                let failed = created.iter().filter(|id| unsent.contains(id)).count();
                Ok(JobOutcome {
                    created: created.len(),
                    existing,
                    published: Published {
                        sent: created.len() - failed,
                        failed,
                    },
                })
            }
            Part::Failed(error) => Err(error),
            Part::Pending(_) => unreachable!("every pending part was resolved above"),
        })
        .collect())
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
