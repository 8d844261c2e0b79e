//! The queues jobs wait in: apalis storages on SQLite, PostgreSQL or Redis,
//! one queue per kind, named `<queue.prefix>.<kind>` (never after a Rust type).
//!
//! A queue entry ([`Queued`]) is the ledger id plus the job; state, attempts
//! and errors live in the ledger (`herald_jobs`, see [`crate::store`]), so
//! submission ([`submit`]), the retry policy and dead jobs behave alike on
//! every backend.

pub(crate) mod backend;
pub mod celery;
pub mod submit;

use serde::{Deserialize, Serialize};

pub use backend::{GivenUp, JobQueue, QueueError};
pub use submit::{
    BatchError, MAX_BATCH, Submission, SubmitError, Submitted, Submitter, backoff, check_all,
    requeue_unqueued, retry_dead, submit, submit_many,
};

use crate::jobs::Job;

/// What a queue carries: which ledger row, and the job itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub id: String,
    #[serde(flatten)]
    pub job: Job,
    /// The Celery task id when the job came from Celery's broker (its
    /// dedup key is `celery:<id>`): the worker writes the job's end to
    /// Celery's result backend under it. Absent for herald's own jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub celery_id: Option<String>,
}

impl Queued {
    /// The entry for ledger job `id`, Celery's when `dedup_key` says so.
    pub fn new(id: String, job: Job, dedup_key: Option<&str>) -> Queued {
        let celery_id = dedup_key.and_then(celery::task_id_of).map(str::to_string);
        Queued { id, job, celery_id }
    }
}
