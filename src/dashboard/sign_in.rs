//! Signing in and out of the dashboard: `/dashboard/session` sets and
//! clears the session cookie and answers the CSRF token the page sends
//! with its buttons (how access is decided is [`super::session`]'s).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::session::{self, Access, Granted};
use super::{DashboardState, Peer};
use crate::api::error;

/// The answer to a sign-in: the CSRF token the page sends with buttons.
#[derive(Debug, Serialize)]
struct SessionAnswer {
    csrf: String,
    /// Unix seconds.
    expires: i64,
    development: bool,
}

#[derive(Debug, Deserialize)]
struct SignIn {
    #[serde(default)]
    key: String,
}

fn session_answer(
    access: &Access,
    session: session::Session,
    cookie: Option<HeaderValue>,
) -> Response {
    let body = SessionAnswer {
        csrf: session.csrf,
        expires: session.expires,
        development: access.development(),
    };
    let mut response = ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /dashboard/session` `{"key": "..."}`: signs in, setting the
/// session cookie; answers the CSRF token. Sent as JSON only (415
/// otherwise), so another site's form cannot sign a browser in.
pub(super) async fn sign_in(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send {\"key\": ...} as application/json",
        );
    }
    let Ok(SignIn { key }) = serde_json::from_slice(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"key\": \"<api key>\"}");
    };
    if let Some(wait) = state.0.throttle.wait(peer) {
        let seconds = wait.as_secs().max(1);
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many refused sign-ins from this address ({} a minute); try again in {seconds} s",
                super::throttle::TRIES
            ),
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return answer;
    }
    let access = &state.0.access;
    match access.sign_in(&key, &headers, peer) {
        Ok((session, cookie)) => {
            tracing::info!("dashboard: signed in");
            session_answer(access, session, Some(cookie))
        }
        Err(denied) => {
            tracing::info!("dashboard: sign-in refused");
            state.0.throttle.refused(peer);
            denied.into_response()
        }
    }
}

/// `GET /dashboard/session`: the session's CSRF token (a page reloaded
/// keeps its session); in development mode a local page gets a session.
pub(super) async fn session_get(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    let access = &state.0.access;
    match access.read(&headers, peer) {
        Ok(Granted::Session(session)) => session_answer(access, session, None),
        Ok(Granted::Key) => error(
            StatusCode::BAD_REQUEST,
            "a bearer key needs no session; call the routes with it",
        ),
        Err(denied) => match access.development_session(&headers, peer) {
            Some(Ok((session, cookie))) => session_answer(access, session, Some(cookie)),
            _ => denied.into_response(),
        },
    }
}

/// `DELETE /dashboard/session`: signs out (the cookie is cleared).
pub(super) async fn sign_out(
    State(state): State<DashboardState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    let access = &state.0.access;
    if let Err(denied) = access.write(&headers, peer) {
        return denied.into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, access.sign_out_cookie());
    response
}
