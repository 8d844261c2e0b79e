//! The demo page at `/` and its development-only token route.
//!
//! The page (demo/index.html) shows one user's notifications live through
//! the standalone client (clients/herald-notifications.js), with an unread
//! count, mark read and a button that submits a `notify` job to
//! `POST /api/jobs`. It gets its token from `POST /demo/token`, which mints
//! one only in development mode (`herald run --dev`: a loopback address,
//! the embedded SQLite store and its generated secret, never a configured
//! SECRET_KEY, which may be the application's real one), asked from this
//! machine (a loopback TCP peer) by a plainly local request
//! (`api::local_request`: loopback `Host` and `Origin`, nothing forwarded
//! by a proxy). Anywhere else the route answers 403 with the reason and the
//! page asks for a pasted token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Json, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::api::error;
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
    let minting = if !settings.development {
        Minting::Refused(
            "development tokens are minted only in development mode (`herald run --dev`)",
        )
    } else if !address.ip().is_loopback() {
        Minting::Refused(
            "development tokens are minted only when herald listens on a loopback address",
        )
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
    request: Parts,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let (secret, ttl) = match minting.as_ref() {
        Minting::Allowed { secret, ttl } => (secret, *ttl),
        Minting::Refused(reason) => return error(StatusCode::FORBIDDEN, *reason),
    };
    let peer = request.extensions.get::<ConnectInfo<SocketAddr>>();
    let local = crate::api::local_peer(peer.map(|ConnectInfo(peer)| *peer))
        .and_then(|()| crate::api::local_request(&request.headers));
    if let Err(reason) = local {
        return error(
            StatusCode::FORBIDDEN,
            format!("development tokens: {reason}"),
        );
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            let reason = format!("expected {{\"user_id\": N}}: {}", rejection.body_text());
            return error(StatusCode::BAD_REQUEST, reason);
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
