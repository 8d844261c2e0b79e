//! The WebSocket sidecar: `GET /ws/notifications/` authenticates a browser
//! ([`auth`]), joins its channel to `notifications_{user_id}` on the layer and
//! forwards group events as the contract's JSON ([`protocol`]), one task per
//! connection ([`connection`]). Sockets only: `crate::http` serves this
//! route beside the rest, and `crate::startup` runs `herald sidecar`.

pub mod auth;
mod connection;
pub mod metrics;
pub mod protocol;
pub mod schema;
mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, SidecarSettings};
use crate::layer::ChannelLayer;
use crate::store::Store;
use metrics::{Metrics, Snapshot};
use protocol::close;

/// Limits the sidecar's own code sets: a resume sends at most one page of
/// the store's. The check `startup` runs at load.
pub fn check_settings(settings: &SidecarSettings) -> Result<(), ConfigError> {
    if settings.replay_limit > crate::store::PAGE_LIMIT {
        return Err(ConfigError::new(
            "sidecar.replay_limit",
            format!("must be at most {}", crate::store::PAGE_LIMIT),
        ));
    }
    Ok(())
}

/// Everything a connection needs; cheap to clone.
#[derive(Clone)]
pub struct SidecarState(Arc<Shared>);

struct Shared {
    layer: Arc<dyn ChannelLayer>,
    /// For resume (missed notifications) and mark read.
    store: Store,
    /// Django's SECRET_KEY, which signs the access tokens.
    secret: SecretString,
    settings: SidecarSettings,
    metrics: Metrics,
    slots: Mutex<Slots>,
    /// Woken when the last connection ends, for shutdown.
    idle: Notify,
    /// Cancelled on shutdown: every connection closes with 1001.
    shutdown: CancellationToken,
    /// Whether a token's user exists and is active.
    users: users::UserCheck,
    /// Refused handshakes holding a socket until their close is read.
    refusing: Arc<tokio::sync::Semaphore>,
}

/// Refused handshakes waiting for their close at once, as a share of
/// `sidecar.max_pending_connections`; past it, a refusal is a plain HTTP
/// answer (429), so bad clients cannot pile up sockets.
const REFUSING_SHARE: usize = 4;

/// Largest `Sec-WebSocket-Protocol` header (or `?token=`) read: an access
/// token is a few hundred bytes; a larger value is refused, never echoed.
const MAX_CREDENTIAL: usize = 8192;

/// Open connections, in all and per user.
#[derive(Default)]
struct Slots {
    total: usize,
    per_user: HashMap<i64, usize>,
}

/// One open connection's place in the limits; freed on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    user_id: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.shared.slots();
        if let Some(count) = slots.per_user.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                slots.per_user.remove(&self.user_id);
            }
        }
        slots.total -= 1;
        let empty = slots.total == 0;
        drop(slots);
        if empty {
            self.shared.idle.notify_waiters();
        }
    }
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn open(&self) -> usize {
        self.slots().total
    }
}

impl SidecarState {
    pub fn new(
        layer: Arc<dyn ChannelLayer>,
        store: Store,
        secret: SecretString,
        settings: SidecarSettings,
    ) -> Self {
        Self(Arc::new(Shared {
            layer,
            users: users::UserCheck::new(store.clone(), &settings),
            refusing: Arc::new(tokio::sync::Semaphore::new(
                (settings.max_pending_connections / REFUSING_SHARE).max(1),
            )),
            store,
            secret,
            settings,
            metrics: Metrics::default(),
            slots: Mutex::default(),
            idle: Notify::new(),
            shutdown: CancellationToken::new(),
        }))
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.0.open()
    }

    /// Distinct users with an open connection now.
    pub fn users_online(&self) -> usize {
        self.0.slots().per_user.len()
    }

    /// The counters, read now.
    pub fn metrics(&self) -> Snapshot {
        self.0.metrics.snapshot(self.open_connections() as u64)
    }

    /// The sidecar's counters as Prometheus text (`/metrics` adds the
    /// process-wide ones).
    pub fn prometheus_text(&self) -> String {
        self.0.metrics.render(self.open_connections() as u64)
    }

    /// Closes every connection with 1001 and refuses new ones.
    pub fn begin_shutdown(&self) {
        self.0.shutdown.cancel();
    }

    /// Takes a place for `user_id`, or says which limit is reached.
    fn acquire(&self, user_id: i64) -> Result<Slot, (u16, &'static str)> {
        let settings = &self.0.settings;
        let mut slots = self.0.slots();
        if slots.total >= settings.max_connections {
            return Err((close::SERVER_FULL, "server_full"));
        }
        let mine = slots.per_user.entry(user_id).or_default();
        if *mine >= settings.max_connections_per_user {
            return Err((close::TOO_MANY_CONNECTIONS, "too_many_connections"));
        }
        *mine += 1;
        slots.total += 1;
        Ok(Slot {
            shared: self.0.clone(),
            user_id,
        })
    }

    /// The sidecar's settings.
    pub fn settings(&self) -> &SidecarSettings {
        &self.0.settings
    }

    /// The store it resumes from (readiness checks it too).
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The channel layer its connections listen on.
    pub fn layer(&self) -> &Arc<dyn ChannelLayer> {
        &self.0.layer
    }

    /// Cancelled when shutdown begins: the server stops accepting and every
    /// connection closes with 1001.
    pub fn stopping(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }

    /// Waits until no connection is open, at most `limit`.
    pub async fn wait_idle(&self, limit: Duration) {
        let wait = async {
            loop {
                let idle = self.0.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.0.open() == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!(
                open = self.0.open(),
                "shutdown: connections still open after the timeout"
            );
        }
    }
}

/// The sidecar's one route, `/ws/notifications/`; `crate::http` composes
/// it with health, metrics and the rest of the surface.
pub fn router(state: SidecarState) -> Router {
    Router::new()
        .route("/ws/notifications/", get(notifications))
        .with_state(state)
}

/// A plain HTTP refusal of a handshake, `{"error": reason}` like every
/// other error answer of herald's.
fn refuse_http(status: StatusCode, reason: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": reason.into() });
    (status, axum::Json(body)).into_response()
}

/// Query parameters of the WebSocket handshake.
#[derive(Debug, Default, Deserialize)]
struct HandshakeQuery {
    token: Option<String>,
    last_id: Option<String>,
}

async fn notifications(
    State(state): State<SidecarState>,
    headers: HeaderMap,
    query: Result<Query<HandshakeQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.0.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let settings = &state.0.settings;
    let offered: usize = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .map(|value| value.len())
        .sum();
    if offered > MAX_CREDENTIAL
        || query
            .token
            .as_ref()
            .is_some_and(|t| t.len() > MAX_CREDENTIAL)
    {
        state.0.metrics.auth_failure("credential_too_long");
        let reason = format!("the token (subprotocol or ?token=) is over {MAX_CREDENTIAL} bytes");
        return refuse_http(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason);
    }
    let credentials = auth::credentials(&headers, query.token.as_deref());
    let mut upgrade = upgrade
        .read_buffer_size(settings.buffer_size)
        .write_buffer_size(settings.buffer_size)
        // tungstenite refuses (mid-frame) what is far over the limit; the
        // connection checks the exact limit on whole messages and closes
        // cleanly with 1009.
        .max_message_size(settings.max_message_size.saturating_mul(4))
        .max_frame_size(settings.max_message_size.saturating_mul(4));
    if let Some(echo) = credentials
        .echo
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        upgrade.set_selected_protocol(echo);
    }
    let outcome = admit(&state, &credentials, &headers, query.last_id.as_deref()).await;
    let refusal = match &outcome {
        Ok(_) => None,
        Err(_) => match state.0.refusing.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let reason = "too many refused handshakes at once; try again later";
                return refuse_http(StatusCode::TOO_MANY_REQUESTS, reason);
            }
        },
    };
    upgrade.on_upgrade(move |socket| async move {
        match outcome {
            Ok(accepted) => connection::run(socket, state, accepted).await,
            Err((code, reason)) => {
                state.0.metrics.closed(code);
                connection::refuse(socket, code, reason).await
            }
        }
        drop(refusal);
    })
}

/// Decides a handshake: the token, then its user, then the limits. A
/// refusal is the close code and reason the client gets.
async fn admit(
    state: &SidecarState,
    credentials: &auth::Credentials,
    headers: &HeaderMap,
    last_id: Option<&str>,
) -> Result<connection::Accepted, (u16, &'static str)> {
    let settings = &state.0.settings;
    let refused = |code: u16, reason: &'static str| {
        state.0.metrics.auth_failure(reason);
        tracing::info!(reason, "WebSocket authentication failed");
        (code, reason)
    };
    let token = auth::authenticate(
        &state.0.secret,
        credentials,
        headers,
        &settings.allowed_origins,
    )
    .map_err(|error| refused(close::UNAUTHORIZED, error.code()))?;
    state.0.users.check(token.user_id).await.map_err(|error| {
        let code = match error {
            users::UserRefusal::Unavailable => close::SERVER_FULL,
            _ => close::UNAUTHORIZED,
        };
        refused(code, error.code())
    })?;
    let slot = state.acquire(token.user_id).map_err(|(code, reason)| {
        metrics::inc(&state.0.metrics.connections_refused);
        tracing::info!(
            user_id = token.user_id,
            reason,
            "WebSocket refused by a limit"
        );
        (code, reason)
    })?;
    metrics::inc(&state.0.metrics.connections_accepted);
    let (last_id, bad_last_id) = match last_id {
        None | Some("") => (None, false),
        Some(text) => match text.parse::<i64>() {
            Ok(id) => (Some(id), false),
            Err(_) => (None, true),
        },
    };
    Ok(connection::Accepted {
        token,
        slot,
        last_id,
        bad_last_id,
    })
}
