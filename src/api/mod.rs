//! The HTTP job API, served beside the WebSocket:
//!
//! - `POST /api/jobs` `{kind, payload, run_at?, dedup_key?}`: 202 with the
//!   job id (200 with `existing: true` when the dedup key names an earlier
//!   job); 400 bad JSON or unknown kind (listing the kinds), 422 a payload
//!   that breaks the kind's schema (naming the field), 413 over the size
//!   limit, 415 not sent as JSON, 401 without the right bearer key (or,
//!   with no key, a request that is not plainly local);
//! - `POST /api/jobs/batch` `{jobs: [...]}`: up to 1,000 jobs in one
//!   request, checked whole before any is recorded (an error names the
//!   job, `jobs[i]`), answered in order;
//! - `GET /api/jobs/{id}`: state, attempts, last error;
//! - `GET /api/jobs?state=dead`: jobs in a state (newest first, at most 100);
//! - `POST /api/jobs/{id}/retry`: queues a dead job again;
//! - `POST /api/celery/revoke` `{task_ids: [...]}`: revokes Celery tasks
//!   (`revoke`).
//!
//! Their OpenAPI document is `crate::http::openapi`'s.
//!
//! Every error is `{"error": "..."}` with the reason.

mod auth;
mod body;
pub mod revoke;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub use auth::ApiAuth;
pub(crate) use auth::{local_peer, local_request};
pub(crate) use body::error;

pub(crate) use auth::Refused;
pub(crate) use body::ErrorBody;
use body::{BatchAnswer, BatchBody, JobList, RetryAnswer, SubmitAnswer, SubmitBody};

use crate::config::ApiSettings;
use crate::jobs::{JobInputError, KINDS};
use crate::queue::{
    BatchError, JobQueue, MAX_BATCH, Submission, SubmitError, Submitter, retry_dead, submit_many,
};
use crate::store::{JobRecord, JobState, Store};

/// Jobs one list answer holds at most.
const LIST_LIMIT: i64 = 100;

/// What the job routes need; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub queue: JobQueue,
    pub auth: ApiAuth,
    /// Single submissions of concurrent requests, recorded together.
    pub submitter: Submitter,
    /// Revokes Celery tasks (`POST /api/celery/revoke`).
    pub revoker: crate::ingress::revoke::Revoker,
}

impl ApiState {
    /// The API as `settings` configure it (key, development mode).
    pub fn new(settings: &crate::config::Settings, store: Store, queue: JobQueue) -> Self {
        // The settings were checked at start: a backend that does not
        // build here is none (revokes are still recorded and honoured).
        let results = crate::ingress::result_backend(&settings.celery, &store)
            .ok()
            .flatten();
        ApiState {
            submitter: Submitter::new(store.clone(), queue.clone()),
            revoker: crate::ingress::revoke::Revoker::new(
                store.clone(),
                results,
                settings.celery.revoke_expires,
            ),
            store,
            queue,
            auth: ApiAuth::new(&settings.api.key, settings.development),
        }
    }
}

/// The `/api/jobs` routes, with the body size limits applied.
pub fn router(state: ApiState, limits: &ApiSettings) -> Router {
    let batch = post(create_batch).layer(DefaultBodyLimit::max(limits.max_batch_body_size));
    Router::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/{id}", get(show))
        .route("/api/jobs/{id}/retry", post(retry))
        .layer(DefaultBodyLimit::max(limits.max_body_size))
        .route("/api/jobs/batch", batch)
        .route(
            "/api/celery/revoke",
            post(revoke::revoke).layer(DefaultBodyLimit::max(limits.max_batch_body_size)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Every job route needs the API key (see [`ApiAuth`]); checked before the
/// body is read.
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    match state.auth.check(request.headers(), peer) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Submits a job.
#[utoipa::path(
    post,
    path = "/api/jobs",
    operation_id = "submit_job",
    tag = "jobs",
    request_body = SubmitBody,
    responses(
        (status = 202, description = "Checked, recorded and queued (`existing: false`).",
            body = SubmitAnswer),
        (status = 200, description = "`dedup_key` names a job submitted earlier: its id and \
            state, `existing: true`; nothing new is queued.", body = SubmitAnswer),
        (status = 400, description = "The body is not JSON, lacks `kind` or has an unknown \
            field; or the kind is unknown (then `kinds` lists the known ones).",
            body = ErrorBody),
        (status = 401, response = auth::Refused),
        (status = 413, description = "The body is over `api.max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`.",
            body = ErrorBody),
        (status = 422, description = "The payload breaks the kind's schema or holds what the \
            database would refuse (a NUL character, text longer than its column, an id out of \
            its column's range), `dedup_key` is empty or too long, or `run_at` is not RFC 3339 \
            or more than 366 days ahead: `field` names the field.", body = ErrorBody),
        (status = 503, description = "The database could not be written; nothing is \
            recorded. (A queue that cannot be written is not an error: the job is recorded \
            and a worker queues it when the queue answers.)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: SubmitBody = match json_body(&headers, body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    match state.submitter.submit(body.into()).await {
        Ok(done) => {
            let status = if done.existing {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, axum::Json(SubmitAnswer::from(done))).into_response()
        }
        Err(e) => submit_error(e, None),
    }
}

/// Submits many jobs at once.
#[utoipa::path(
    post,
    path = "/api/jobs/batch",
    operation_id = "submit_jobs",
    tag = "jobs",
    request_body = BatchBody,
    responses(
        (status = 202, description = "Every job checked, and the new ones recorded and queued; \
            the answers follow the jobs' order (`existing: true` where `dedup_key` named an \
            earlier job, also one earlier in this batch).", body = BatchAnswer),
        (status = 200, description = "Every job's `dedup_key` named an earlier job; nothing \
            new is queued.", body = BatchAnswer),
        (status = 400, description = "The body is not JSON or has no jobs or too many (at most \
            1,000); or a job's kind is unknown (`index` names the job, `kinds` lists the known \
            ones). Nothing is queued.", body = ErrorBody),
        (status = 401, response = auth::Refused),
        (status = 413, description = "The body is over `api.max_batch_body_size`.",
            body = ErrorBody),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`.",
            body = ErrorBody),
        (status = 422, description = "A job's payload breaks its kind's schema or holds what \
            the database would refuse, or its `dedup_key` or `run_at` is bad: `index` names the \
            job and `field` the field (`jobs[i].payload.<path>`, `jobs[i].dedup_key`, \
            `jobs[i].run_at`). Nothing is recorded.", body = ErrorBody),
        (status = 503, description = "The database could not be written; nothing is \
            recorded.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn create_batch(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: BatchBody = match json_body(&headers, body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        let reason = format!(
            "`jobs` must hold 1 to {MAX_BATCH} jobs, not {}",
            body.jobs.len()
        );
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let submissions = body.jobs.into_iter().map(Submission::from).collect();
    match submit_many(&state.store, &state.queue, submissions).await {
        Ok(done) => {
            let status = if done.iter().all(|job| job.existing) {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let jobs = done.into_iter().map(SubmitAnswer::from).collect();
            (status, axum::Json(BatchAnswer { jobs })).into_response()
        }
        Err(BatchError { at, error }) => submit_error(error, at),
    }
}

/// The body of a submission: JSON, sent as JSON. A browser sends a
/// cross-site form or text/plain post without asking; requiring the JSON
/// content type keeps other sites' pages from submitting.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        let reason = "send the job as JSON with `Content-Type: application/json`";
        return Err(Box::new(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason)));
    }
    let body =
        body.map_err(|rejection| Box::new(error(rejection.status(), rejection.body_text())))?;
    let mut reader = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| Box::new(body_error(e)))
}

/// A body that is not the request's shape: 400 for JSON that does not
/// parse or lacks (or adds) a field, 422 naming the field for a value of
/// the wrong type (a `run_at` that is not RFC 3339).
fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> Response {
    let reason = e.inner().to_string();
    let shape = reason.starts_with("missing field") || reason.starts_with("unknown field");
    if e.inner().classify() != serde_json::error::Category::Data || shape {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {reason}"),
        );
    }
    let field = e.path().to_string();
    let mut body = ErrorBody::new(format!("{field}: {reason}"));
    body.field = Some(field);
    body.answer(StatusCode::UNPROCESSABLE_ENTITY)
}

/// The answer to a failed submission; `at` is the index of the job at
/// fault in a batch.
fn submit_error(e: SubmitError, at: Option<usize>) -> Response {
    let prefix = at.map(|i| format!("jobs[{i}]")).unwrap_or_default();
    let mut body = ErrorBody::new(match at {
        Some(_) => format!("{prefix}: {e}"),
        None => e.to_string(),
    });
    body.index = at;
    let field = |name: String| match at {
        Some(_) => format!("{prefix}.{name}"),
        None => name,
    };
    let status = match e {
        SubmitError::Input(JobInputError::UnknownKind { .. }) => {
            body.kinds = Some(KINDS.map(String::from).to_vec());
            StatusCode::BAD_REQUEST
        }
        SubmitError::Input(
            JobInputError::InvalidPayload { ref field, .. }
            | JobInputError::OverLimit { ref field, .. },
        ) => {
            body.field = Some(match (at, field.as_str()) {
                (Some(_), "") => format!("{prefix}.payload"),
                (Some(_), field) => format!("{prefix}.payload.{field}"),
                (None, "") => "payload".to_string(),
                (None, field) => field.to_string(),
            });
            StatusCode::UNPROCESSABLE_ENTITY
        }
        SubmitError::DedupKey(_) => {
            body.field = Some(field("dedup_key".into()));
            StatusCode::UNPROCESSABLE_ENTITY
        }
        SubmitError::RunAt(_) => {
            body.field = Some(field("run_at".into()));
            StatusCode::UNPROCESSABLE_ENTITY
        }
        SubmitError::NotFound(_) => StatusCode::NOT_FOUND,
        SubmitError::NotDead { .. } => StatusCode::CONFLICT,
        SubmitError::Store(_) | SubmitError::Queue(_) | SubmitError::Unavailable(_) => {
            tracing::error!(error = %body.error, "job submission failed");
            body.error = "the database or the queue is unavailable; try again".into();
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    body.answer(status)
}

/// One job: its state, attempts and last error.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id, as submitting answered it, or the Celery task id of a job taken from Celery's broker.")),
    responses(
        (status = 200, description = "The job.", body = JobRecord),
        (status = 401, response = auth::Refused),
        (status = 404, description = "No job has this id.", body = ErrorBody),
        (status = 503, description = "The database could not be read.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let found = match state.store.get_job(&id).await {
        // A Celery task id: the ingress recorded its job under that key.
        Ok(None) => {
            let key = crate::ingress::dedup_key(&id);
            state.store.get_job_by_dedup_key(&key).await
        }
        found => found,
    };
    match found {
        Ok(Some(job)) => axum::Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => submit_error(e.into(), None),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    state: String,
}

/// The jobs in one state, newest first, at most 100.
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(("state" = JobState, Query, description = "The state to list, e.g. `dead`.")),
    responses(
        (status = 200, description = "The jobs.", body = JobList),
        (status = 400, description = "`state` is missing or not a state.", body = ErrorBody),
        (status = 401, response = auth::Refused),
        (status = 503, description = "The database could not be read.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let states = [
        "queued",
        "retrying",
        "done",
        "dead",
        "cancelled",
        "discarded",
    ];
    let wanted = query.ok().map(|Query(q)| q.state);
    let Some(job_state) = wanted.as_deref().and_then(JobState::from_name) else {
        let reason = format!(
            "query parameter `state` must be one of: {}",
            states.join(", ")
        );
        return error(StatusCode::BAD_REQUEST, reason);
    };
    match state.store.jobs_in_state(job_state, LIST_LIMIT).await {
        Ok(jobs) => axum::Json(JobList { jobs }).into_response(),
        Err(e) => submit_error(e.into(), None),
    }
}

/// Queues a dead job again, with a fresh set of attempts.
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/retry",
    operation_id = "retry_job",
    tag = "jobs",
    params(("id" = String, Path, description = "The id of a dead job.")),
    responses(
        (status = 202, description = "Queued again.", body = RetryAnswer),
        (status = 400, description = "The job's kind is no longer known (a job recorded by \
            another herald version); `kinds` lists the known ones.", body = ErrorBody),
        (status = 401, response = auth::Refused),
        (status = 404, description = "No job has this id.", body = ErrorBody),
        (status = 409, description = "The job is not dead; only dead jobs are retried.",
            body = ErrorBody),
        (status = 422, description = "The job's stored payload no longer fits its kind's \
            schema (a job recorded by another herald version).", body = ErrorBody),
        (status = 503, description = "The database could not be written.",
            body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn retry(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match retry_dead(&state.store, &state.queue, &id).await {
        Ok(()) => {
            let body = RetryAnswer {
                id,
                state: JobState::Queued,
            };
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(e) => submit_error(e, None),
    }
}
