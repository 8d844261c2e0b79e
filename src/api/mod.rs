//! The HTTP job API, served beside the WebSocket:
//!
//! - `POST /api/jobs` `{kind, payload, run_at?, dedup_key?}`: 202 with the
//!   job id (200 with `existing: true` when the dedup key names an earlier
//!   job); 400 bad JSON or unknown kind (listing the kinds), 422 a payload
//!   that breaks the kind's schema (naming the field), 413 over the size
//!   limit, 401 without the right bearer key;
//! - `GET /api/jobs/{id}`: state, attempts, last error;
//! - `GET /api/jobs?state=dead`: jobs in a state (newest first, at most 100);
//! - `POST /api/jobs/{id}/retry`: queues a dead job again.
//!
//! Every error is `{"error": "..."}` with the reason.

mod auth;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

pub use auth::ApiAuth;

use crate::jobs::{JobInputError, KINDS};
use crate::queue::{JobQueue, Submission, SubmitError, retry_dead, submit};
use crate::store::{JobState, Store};

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

/// The `/api/jobs` routes, with the body size limit applied.
pub fn router(state: ApiState, max_body_size: usize) -> Router {
    Router::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/{id}", get(show))
        .route("/api/jobs/{id}/retry", post(retry))
        .layer(DefaultBodyLimit::max(max_body_size))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Every route needs the API key (see [`ApiAuth`]); checked before the body
/// is read.
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match state.auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// An error answer: status and `{"error": reason, ...extra}`.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({ "error": reason.into() });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, axum::Json(body)).into_response()
}

/// The submission body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    kind: String,
    #[serde(default)]
    payload: Value,
    run_at: Option<DateTime<Utc>>,
    dedup_key: Option<String>,
}

async fn create(State(state): State<ApiState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text(), json!({})),
    };
    let body: SubmitBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {e}"),
                json!({}),
            );
        }
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
            let body = json!({"id": done.id, "state": done.state, "existing": done.existing});
            (status, axum::Json(body)).into_response()
        }
        Err(e) => submit_error(e),
    }
}

fn submit_error(e: SubmitError) -> Response {
    let reason = e.to_string();
    match e {
        SubmitError::Input(JobInputError::UnknownKind { .. }) => {
            error(StatusCode::BAD_REQUEST, reason, json!({"kinds": KINDS}))
        }
        SubmitError::Input(JobInputError::InvalidPayload { field, .. }) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            reason,
            json!({"field": field}),
        ),
        SubmitError::DedupKey(_) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            reason,
            json!({"field": "dedup_key"}),
        ),
        SubmitError::NotFound(_) => error(StatusCode::NOT_FOUND, reason, json!({})),
        SubmitError::NotDead { .. } => error(StatusCode::CONFLICT, reason, json!({})),
        SubmitError::Store(_) | SubmitError::Queue(_) => {
            tracing::error!(error = %reason, "job submission failed");
            error(StatusCode::SERVICE_UNAVAILABLE, reason, json!({}))
        }
    }
}

async fn show(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.store.get_job(&id).await {
        Ok(Some(job)) => axum::Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}"), json!({})),
        Err(e) => submit_error(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: String,
}

async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let states = ["queued", "running", "retrying", "done", "dead"];
    let wanted = query.ok().map(|Query(q)| q.state);
    let Some(job_state) = wanted.as_deref().and_then(JobState::from_name) else {
        let reason = format!(
            "query parameter `state` must be one of: {}",
            states.join(", ")
        );
        return error(StatusCode::BAD_REQUEST, reason, json!({}));
    };
    match state.store.jobs_in_state(job_state, LIST_LIMIT).await {
        Ok(jobs) => axum::Json(json!({ "jobs": jobs })).into_response(),
        Err(e) => submit_error(e.into()),
    }
}

async fn retry(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match retry_dead(&state.store, &state.queue, &id).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"id": id, "state": "queued"})),
        )
            .into_response(),
        Err(e) => submit_error(e),
    }
}
