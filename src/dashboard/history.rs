//! The history search (`/dashboard/history`): jobs by id, dedup key or
//! user, kind and state, read on the dashboard's own connections.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{DashboardState, Peer, unavailable};
use crate::api::error;
use crate::jobs::KINDS;
use crate::store::{JobRecord, JobSearch, JobState};

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    state: String,
    limit: Option<i64>,
}

/// A page of the history.
#[derive(Debug, Serialize)]
struct HistoryAnswer {
    jobs: Vec<JobRecord>,
}

/// `GET /dashboard/history?q=&kind=&state=&limit=`: jobs by id, dedup key
/// or user (`q`), kind and state, newest first (at most 200).
pub(super) async fn history(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = state.0.access.read(&headers, peer) {
        return denied.into_response();
    }
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string");
    };
    let kind = match query.kind.trim() {
        "" => None,
        kind if KINDS.contains(&kind) => Some(kind.to_string()),
        kind => return error(StatusCode::BAD_REQUEST, format!("unknown kind {kind:?}")),
    };
    let job_state = match query.state.trim() {
        "" => None,
        name => match JobState::from_name(name) {
            Some(state) => Some(state),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown state {name:?}")),
        },
    };
    let text = query.q.trim();
    if text.len() > 255 {
        return error(StatusCode::BAD_REQUEST, "q is at most 255 characters");
    }
    let search = JobSearch {
        text: (!text.is_empty()).then(|| text.to_string()),
        kind,
        state: job_state,
        limit: query.limit.unwrap_or(50).clamp(1, 200),
    };
    match state.0.reads.search_jobs(&search).await {
        Ok(jobs) => axum::Json(HistoryAnswer { jobs }).into_response(),
        Err(e) => unavailable(e),
    }
}
