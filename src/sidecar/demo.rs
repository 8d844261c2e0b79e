//! The demo page at `/` and its development-only token route.
//!
//! The page (demo/index.html) shows one user's notifications live through
//! the standalone client (clients/herald-notifications.js), with an unread
//! count, mark read and a button that submits a `notify` job to
//! `POST /api/jobs`. It gets its token from `POST /demo/token`, which mints
//! one only in development: herald on a loopback address with the embedded
//! SQLite store, asked by a loopback `Host` (so a page of another site that
//! rebinds its DNS name to 127.0.0.1 gets nothing). Anywhere else the route
//! answers 403 with the reason and the page asks for a pasted token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, http::Uri};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::config::Settings;

/// Which command serves: the demo page is on by default only in `herald run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `herald run`: worker, sidecar and API in one process.
    AllInOne,
    /// `herald sidecar`: the WebSocket and the API only.
    SidecarOnly,
}

/// What `POST /demo/token` may do.
#[derive(Clone)]
enum Minting {
    /// Development: mint tokens with this secret, living `ttl`.
    Allowed { secret: SecretString, ttl: Duration },
    /// Anywhere else: refuse, saying why.
    Refused(&'static str),
}

/// The demo routes for a server listening on `address` (none when the demo
/// is off).
pub fn routes(settings: &Settings, mode: Mode, address: SocketAddr) -> anyhow::Result<Router> {
    let enabled = settings.sidecar.demo.unwrap_or(mode == Mode::AllInOne);
    if !enabled {
        return Ok(Router::new());
    }
    let minting = if !address.ip().is_loopback() {
        Minting::Refused(
            "development tokens are minted only when herald listens on a loopback address",
        )
    } else if !settings.is_embedded() {
        Minting::Refused("development tokens are minted only with the embedded SQLite store")
    } else {
        Minting::Allowed {
            secret: settings.secret()?,
            ttl: settings.tokens.access_ttl,
        }
    };
    Ok(Router::new()
        .route("/", get(page))
        .route("/herald-notifications.js", get(client))
        .route("/demo/token", post(mint))
        .with_state(Arc::new(minting)))
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("demo/index.html"),
    )
}

/// The JavaScript client the page imports: clients/herald-notifications.js.
async fn client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../clients/herald-notifications.js"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user_id: i64,
}

/// `POST /demo/token {"user_id": N}`: `{"access": "...", "user_id": N,
/// "expires_in": seconds}` in development, 403 with the reason elsewhere.
async fn mint(
    State(minting): State<Arc<Minting>>,
    headers: HeaderMap,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let (secret, ttl) = match minting.as_ref() {
        Minting::Allowed { secret, ttl } => (secret, *ttl),
        Minting::Refused(reason) => return error(StatusCode::FORBIDDEN, reason),
    };
    if !loopback_host(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "development tokens are minted only for a loopback Host (localhost, 127.0.0.1, [::1])",
        );
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            let reason = format!("expected {{\"user_id\": N}}: {}", rejection.body_text());
            return error(StatusCode::BAD_REQUEST, &reason);
        }
    };
    match crate::tokens::mint(secret, request.user_id, ttl) {
        Ok(access) => Json(json!({
            "access": access,
            "user_id": request.user_id,
            "expires_in": ttl.as_secs(),
        }))
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "demo token could not be minted");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the token could not be minted",
            )
        }
    }
}

/// Whether the request's `Host` names the loopback interface.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(uri) = format!("http://{host}/").parse::<Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(name) => name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_loopback_hosts_count() {
        for ok in [
            "localhost",
            "localhost:8001",
            "127.0.0.1:8001",
            "[::1]:8001",
            "127.1.2.3",
        ] {
            assert!(loopback_host(&host(ok)), "{ok}");
        }
        for bad in [
            "example.com",
            "evil.localhost.example:80",
            "10.0.0.1:8001",
            "[::2]",
        ] {
            assert!(!loopback_host(&host(bad)), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }
}
