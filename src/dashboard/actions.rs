//! The dashboard's buttons: retry, discard, cancel or revoke (a Celery
//! task's) a job, pause or resume
//! a job kind. Each needs a session's CSRF token or the API key.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{DashboardState, Peer, unavailable};
use crate::api::error;
use crate::jobs::KINDS;
use crate::queue::{SubmitError, retry_dead};
use crate::store::{JobState, Refusal, StoreError};

/// What a button did.
#[derive(Debug, Serialize)]
struct Done {
    id: String,
    state: String,
}

/// `POST /dashboard/jobs/{id}/retry|discard|cancel|revoke`.
pub(super) async fn job_action(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Err(denied) = state.0.access.write(&headers, peer) {
        return denied.into_response();
    }
    if id.len() > 64 {
        return error(StatusCode::NOT_FOUND, "no such job");
    }
    let store = &state.0.store;
    let (outcome, new_state) = match action.as_str() {
        "retry" => {
            let answer = match retry_dead(store, &state.0.queue, &id).await {
                Ok(()) => Ok(Ok(())),
                Err(SubmitError::NotFound(_)) => Ok(Err(Refusal::NotFound)),
                Err(SubmitError::NotDead { state, .. }) => Ok(Err(Refusal::InState(
                    JobState::from_name(state).unwrap_or(JobState::Queued),
                ))),
                Err(SubmitError::Store(e)) => Err(e),
                Err(other) => {
                    tracing::warn!(error = %other, job_id = %id, "dashboard: retry failed");
                    return error(StatusCode::UNPROCESSABLE_ENTITY, other.to_string());
                }
            };
            (answer, JobState::Queued)
        }
        "discard" => (store.discard_job(&id).await, JobState::Discarded),
        "cancel" => (store.cancel_job(&id).await, JobState::Cancelled),
        "revoke" => (revoke(&state, &id).await, JobState::Cancelled),
        other => return error(StatusCode::NOT_FOUND, format!("no action {other:?}")),
    };
    match outcome {
        Ok(Ok(())) => {
            tracing::info!(job_id = %id, action, "dashboard: job changed");
            let body = Done {
                id,
                state: new_state.as_str().into(),
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(Refusal::NotFound)) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Ok(Err(Refusal::InState(current))) => {
            let needs = match action.as_str() {
                "cancel" => "queued or retrying",
                "revoke" => "waiting Celery",
                _ => "dead",
            };
            error(
                StatusCode::CONFLICT,
                format!(
                    "job {id} is {}; {action} needs a {needs} job",
                    current.as_str()
                ),
            )
        }
        Err(e) => unavailable(e),
    }
}

/// The Revoke button of a Celery task's job: the lasting revoke of
/// `AsyncResult.revoke()` (every herald process honours it, REVOKED is
/// written), which cancels the job while it waits.
async fn revoke(state: &DashboardState, id: &str) -> Result<Result<(), Refusal>, StoreError> {
    let Some(job) = state.0.store.get_job(id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    let Some(task_id) = job
        .dedup_key
        .as_deref()
        .and_then(crate::ingress::task_id_of)
    else {
        return Ok(Err(Refusal::InState(job.state)));
    };
    let revoked = state
        .0
        .revoker
        .revoke(&[task_id.to_string()], false)
        .await?;
    if revoked.cancelled.is_empty() {
        return Ok(Err(Refusal::InState(job.state)));
    }
    tracing::info!(job_id = %id, task_id, "dashboard: Celery task revoked");
    Ok(Ok(()))
}

/// `POST /dashboard/kinds/{kind}/pause|resume`.
pub(super) async fn kind_action(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path((kind, action)): Path<(String, String)>,
) -> Response {
    if let Err(denied) = state.0.access.write(&headers, peer) {
        return denied.into_response();
    }
    if !KINDS.contains(&kind.as_str()) {
        return error(StatusCode::NOT_FOUND, format!("unknown kind {kind:?}"));
    }
    let store = &state.0.store;
    let changed = match action.as_str() {
        "pause" => store.pause_kind(&kind).await,
        "resume" => store.resume_kind(&kind).await,
        other => return error(StatusCode::NOT_FOUND, format!("no action {other:?}")),
    };
    match changed {
        Ok(changed) => {
            tracing::info!(kind, action, changed, "dashboard: job kind");
            let paused = action == "pause";
            axum::Json(serde_json::json!({"kind": kind, "paused": paused, "changed": changed}))
                .into_response()
        }
        Err(e) => unavailable(e),
    }
}
