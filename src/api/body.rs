//! The JSON bodies the job API reads and writes. Their OpenAPI schemas are
//! derived from these types (see [`super::openapi`]), so the published
//! document and the answers cannot drift apart.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::queue::submit::MAX_DEDUP_KEY;
use crate::queue::{Submission, Submitted};
use crate::store::{JobRecord, JobState};

/// A job to submit: `payload` must match the schema of `kind` (the job
/// catalog, `jobs/<kind>.schema.json`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SubmitRequest)]
pub(crate) struct SubmitBody {
    /// The job kind.
    pub(crate) kind: String,
    /// The kind's payload.
    #[serde(default)]
    pub(crate) payload: Value,
    /// When to run it (RFC 3339); now when absent.
    pub(crate) run_at: Option<DateTime<Utc>>,
    /// At most one job per key: a repeated key answers 200 with the job
    /// submitted first and queues nothing. Not empty, at most 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub(crate) dedup_key: Option<String>,
}

impl From<SubmitBody> for Submission {
    fn from(body: SubmitBody) -> Self {
        Submission {
            kind: body.kind,
            payload: body.payload,
            run_at: body.run_at,
            dedup_key: body.dedup_key,
        }
    }
}

/// Many jobs to submit at once: checked whole before any is recorded.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchRequest)]
pub(crate) struct BatchBody {
    /// 1 to 1,000 jobs.
    #[schema(min_items = 1, max_items = 1000)]
    pub(crate) jobs: Vec<SubmitBody>,
}

/// The answers to a batch, in the jobs' order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchAnswer {
    pub(crate) jobs: Vec<SubmitAnswer>,
}

// The schemas' literals above must match the limits.
const _: () = assert!(crate::queue::MAX_BATCH == 1000);

// The schema's `max_length` above must be a literal.
const _: () = assert!(MAX_DEDUP_KEY == 255);

/// The answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubmitAnswer {
    pub(crate) id: String,
    pub(crate) state: JobState,
    /// True when `dedup_key` named a job submitted earlier (whose id this
    /// is); nothing new was queued.
    pub(crate) existing: bool,
}

impl From<Submitted> for SubmitAnswer {
    fn from(done: Submitted) -> Self {
        SubmitAnswer {
            id: done.id,
            state: done.state,
            existing: done.existing,
        }
    }
}

/// The answer to a retry: the job is queued again.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetryAnswer {
    pub(crate) id: String,
    pub(crate) state: JobState,
}

/// Jobs in one state, newest first, at most 100.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobList {
    pub(crate) jobs: Vec<JobRecord>,
}

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Why the request failed.
    pub(crate) error: String,
    /// With 422: the field that broke the schema (a payload path such as
    /// `user_id`, or `dedup_key`; in a batch `jobs[i].payload.user_id` or
    /// `jobs[i].dedup_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) field: Option<String>,
    /// With an error in a batch: the index of the job at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) index: Option<usize>,
    /// With 400 for an unknown kind: the known kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) kinds: Option<Vec<String>>,
}

impl ErrorBody {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ErrorBody {
            error: reason.into(),
            field: None,
            index: None,
            kinds: None,
        }
    }

    /// This body with `status`.
    pub(crate) fn answer(self, status: StatusCode) -> Response {
        (status, axum::Json(self)).into_response()
    }
}

/// An error answer that carries only the reason.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    ErrorBody::new(reason).answer(status)
}
