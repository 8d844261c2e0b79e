//! The fleet's figures as the page and API callers get them: a server-sent
//! event stream (`/dashboard/events`) and `GET /api/stats`, both from the
//! one [`super::stats::Collector`].

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::session::Granted;
use super::stats;
use super::{DashboardState, Peer};

/// `GET /dashboard/events`: the figures as a server-sent event `stats`
/// every `dashboard.refresh_interval`, until the page closes.
pub(super) async fn events(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    // A session's stream ends when the session does (the page then asks
    // for the key again).
    let expires = match state.0.access.read(&headers, peer) {
        Ok(Granted::Session(session)) => Some(session.expires),
        Ok(Granted::Key) => None,
        Err(denied) => return denied.into_response(),
    };
    let stream = futures_util::stream::unfold((state, true), move |(state, first)| async move {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(state.0.refresh) => {}
                () = state.0.stop.cancelled() => return None,
            }
        }
        if expires.is_some_and(|at| chrono::Utc::now().timestamp() >= at) {
            return None;
        }
        let (_, json) = state.0.collector.latest().await;
        let event = Event::default().event("stats").data(&*json);
        Some((Ok::<_, Infallible>(event), (state, false)))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The fleet's figures, as the dashboard shows them.
#[utoipa::path(
    get,
    path = "/api/stats",
    operation_id = "stats",
    tag = "dashboard",
    responses(
        (status = 200, description = "The whole fleet's figures, read from the database and \
            Redis (at most once per `dashboard.refresh_interval`): jobs per kind, throughput \
            and run time over 15 minutes, dead jobs, scans, delivery, the channel layer, \
            Celery's broker (when the ingress is on), processes.", body = stats::Stats),
        (status = 401, description = "Neither `Authorization: Bearer <api.key>` nor a \
            dashboard session cookie (or no key configured, outside development mode).",
            body = crate::api::ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn api_stats(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.0.access.read(&headers, peer) {
        return denied.into_response();
    }
    let (_, json) = state.0.collector.latest().await;
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json.to_string(),
    )
        .into_response()
}
