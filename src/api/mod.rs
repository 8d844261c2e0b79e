//! The HTTP job API, served beside the WebSocket:
//!
//! - `POST /api/jobs` `{kind, payload, run_at?, dedup_key?}`: 202 with the
//!   job id (200 with `existing: true` when the dedup key names an earlier
//!   job); 400 bad JSON or unknown kind (listing the kinds), 422 a payload
//!   that breaks the kind's schema (naming the field), 413 over the size
//!   limit, 415 not sent as JSON, 401 without the right bearer key (or,
//!   with no key, a request that is not plainly local);
//! - `GET /api/jobs/{id}`: state, attempts, last error;
//! - `GET /api/jobs?state=dead`: jobs in a state (newest first, at most 100);
//! - `POST /api/jobs/{id}/retry`: queues a dead job again;
//! - `GET /api/openapi.json`: the OpenAPI document of these routes
//!   ([`openapi`]), served without the key.
//!
//! Every error is `{"error": "..."}` with the reason.

mod auth;
mod body;
pub mod openapi;

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
pub(crate) use auth::local_request;
pub(crate) use body::error;

use body::{ErrorBody, JobList, RetryAnswer, SubmitAnswer, SubmitBody};

use crate::jobs::{JobInputError, KINDS};
use crate::queue::{JobQueue, Submission, SubmitError, retry_dead, submit};
use crate::store::{JobRecord, JobState, Store};

/// Jobs one list answer holds at most.
const LIST_LIMIT: i64 = 100;

/// What the job routes need; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub queue: JobQueue,
    pub auth: ApiAuth,
}

impl ApiState {
    /// The API of a server listening on `address`.
    pub fn new(
        settings: &crate::config::Settings,
        store: Store,
        queue: JobQueue,
        address: std::net::SocketAddr,
    ) -> Self {
        ApiState {
            store,
            queue,
            auth: ApiAuth::new(&settings.api.key, address.ip().is_loopback()),
        }
    }
}

/// The `/api/jobs` routes, with the body size limit applied, and the
/// unauthenticated `/api/openapi.json`.
pub fn router(state: ApiState, max_body_size: usize) -> Router {
    Router::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/{id}", get(show))
        .route("/api/jobs/{id}/retry", post(retry))
        .layer(DefaultBodyLimit::max(max_body_size))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        // After the auth layer: the description of the API is public.
        .route("/api/openapi.json", get(openapi::serve))
        .with_state(state)
}

/// Every job route needs the API key (see [`ApiAuth`]); checked before the
/// body is read.
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match state.auth.check(request.headers()) {
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
        (status = 422, description = "The payload breaks the kind's schema, or `dedup_key` is \
            empty or too long: `field` names the field.", body = ErrorBody),
        (status = 503, description = "The database or the queue could not be written; nothing \
            is queued.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
async fn create(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A browser sends a cross-site form or text/plain post without asking;
    // requiring JSON keeps other sites' pages from submitting.
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the job as JSON with `Content-Type: application/json`",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let body: SubmitBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let submission = Submission {
        kind: body.kind,
        payload: body.payload,
        run_at: body.run_at,
        dedup_key: body.dedup_key,
    };
    match submit(&state.store, &state.queue, submission).await {
        Ok(done) => {
            let status = if done.existing {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, axum::Json(SubmitAnswer::from(done))).into_response()
        }
        Err(e) => submit_error(e),
    }
}

fn submit_error(e: SubmitError) -> Response {
    let mut body = ErrorBody::new(e.to_string());
    let status = match e {
        SubmitError::Input(JobInputError::UnknownKind { .. }) => {
            body.kinds = Some(KINDS.map(String::from).to_vec());
            StatusCode::BAD_REQUEST
        }
        SubmitError::Input(JobInputError::InvalidPayload { field, .. }) => {
            body.field = Some(field);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        SubmitError::DedupKey(_) => {
            body.field = Some("dedup_key".into());
            StatusCode::UNPROCESSABLE_ENTITY
        }
        SubmitError::NotFound(_) => StatusCode::NOT_FOUND,
        SubmitError::NotDead { .. } => StatusCode::CONFLICT,
        SubmitError::Store(_) | SubmitError::Queue(_) => {
            tracing::error!(error = %body.error, "job submission failed");
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
    params(("id" = String, Path, description = "The job id, as submitting answered it.")),
    responses(
        (status = 200, description = "The job.", body = JobRecord),
        (status = 401, response = auth::Refused),
        (status = 404, description = "No job has this id.", body = ErrorBody),
        (status = 503, description = "The database could not be read.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.store.get_job(&id).await {
        Ok(Some(job)) => axum::Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => submit_error(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
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
async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let states = ["queued", "retrying", "done", "dead"];
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
        Err(e) => submit_error(e.into()),
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
        (status = 503, description = "The database or the queue could not be written.",
            body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
async fn retry(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match retry_dead(&state.store, &state.queue, &id).await {
        Ok(()) => {
            let body = RetryAnswer {
                id,
                state: JobState::Queued,
            };
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(e) => submit_error(e),
    }
}
