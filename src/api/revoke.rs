//! `POST /api/celery/revoke`: revokes Celery tasks by id, as
//! `AsyncResult(id).revoke()` does, for an operator or a script that has no
//! Celery client at hand. The revoke is the same one herald's remote
//! control records: kept in the database for every herald process and
//! every restart, the waiting jobs cancelled, REVOKED written.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::ErrorBody;
use super::{ApiState, auth, error, json_body};

/// Ids one request may revoke at most.
const MAX_IDS: usize = 1000;

/// The tasks to revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Celery task ids (1 to 1,000).
    #[schema(min_items = 1, max_items = 1000)]
    pub task_ids: Vec<String>,
}

/// What became of each task.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeAnswer {
    /// Countdowns waiting in the ledger, cancelled: they never run.
    pub cancelled: Vec<String>,
    /// No job yet: the message, when it comes, records nothing (ids over
    /// 255 characters, which herald never records, are here too).
    pub unseen: Vec<String>,
    /// Already running or ended: too late (a running job is not stopped).
    pub too_late: Vec<TooLate>,
}

/// A task a revoke came too late for.
#[derive(Debug, Serialize, ToSchema)]
pub struct TooLate {
    pub task_id: String,
    /// Its job's state (`running`, `done`, `dead`, ...).
    pub state: String,
}

/// Revokes Celery tasks.
#[utoipa::path(
    post,
    path = "/api/celery/revoke",
    operation_id = "revoke_celery_tasks",
    tag = "celery",
    request_body = RevokeBody,
    responses(
        (status = 200, description = "Recorded for every herald process until \
            `celery.revoke_expires`; what became of each task.", body = RevokeAnswer),
        (status = 400, description = "The body is not JSON, or `task_ids` is missing, empty \
            or over 1,000 ids.", body = ErrorBody),
        (status = 401, response = auth::Refused),
        (status = 413, description = "The body is over `api.max_batch_body_size`.",
            body = ErrorBody),
        (status = 415, description = "Not sent as `Content-Type: application/json`.",
            body = ErrorBody),
        (status = 422, description = "`task_ids` holds something that is not a string \
            (`field` names it).", body = ErrorBody),
        (status = 503, description = "The database could not be written.", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: RevokeBody = match json_body(&headers, body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    if body.task_ids.is_empty() || body.task_ids.len() > MAX_IDS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("task_ids: give 1 to {MAX_IDS} Celery task ids"),
        );
    }
    match state.revoker.revoke(&body.task_ids, false).await {
        Ok(revoked) => axum::Json(RevokeAnswer {
            cancelled: revoked.cancelled,
            unseen: revoked.unseen,
            too_late: revoked
                .past
                .into_iter()
                .map(|(task_id, state)| TooLate { task_id, state })
                .collect(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "revoke not recorded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again",
            )
        }
    }
}
