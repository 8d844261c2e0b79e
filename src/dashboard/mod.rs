//! The operations dashboard: `GET /dashboard`, one HTML page with a small
//! script and the vendored uPlot charting library (all compiled into the
//! binary), that updates itself from a server-sent event stream of the
//! whole fleet's figures ([`stats`]), read from the database and Redis.
//! The same figures as JSON at `GET /api/stats`. Its buttons retry,
//! discard and cancel jobs and pause or resume kinds. Access: [`session`].
//! Served by `herald run`, `herald sidecar` and `herald worker` (on
//! `worker.listen`). See docs/dashboard.md.

pub mod session;
pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::error;
use crate::config::Settings;
use crate::jobs::KINDS;
use crate::queue::{JobQueue, SubmitError, retry_dead};
use crate::store::{JobRecord, JobSearch, JobState, Refusal, Store};
use session::{Access, Granted};
use stats::Collector;

/// What the dashboard's routes need; cheap to clone.
#[derive(Clone)]
pub struct DashboardState(Arc<Shared>);

struct Shared {
    store: Store,
    /// Where the dashboard reads (see [`reading_pool`]).
    reads: Store,
    queue: JobQueue,
    access: Access,
    collector: Collector,
    refresh: std::time::Duration,
    /// Ends every event stream (on shutdown).
    stop: CancellationToken,
}

impl DashboardState {
    /// The dashboard of `settings` on `store` and `queue`; `secret` is
    /// herald's signing secret (for development-mode sessions).
    pub fn new(
        settings: &Settings,
        store: Store,
        queue: JobQueue,
        secret: Option<&secrecy::SecretString>,
    ) -> DashboardState {
        let settings = Arc::new(settings.clone());
        let reads = reading_pool(&settings).unwrap_or_else(|| store.clone());
        DashboardState(Arc::new(Shared {
            access: Access::new(&settings, secret),
            collector: Collector::new(reads.clone(), settings.clone()),
            reads,
            refresh: settings.dashboard.refresh_interval,
            store,
            queue,
            stop: CancellationToken::new(),
        }))
    }

    /// Ends every open event stream (call on shutdown, so the server's
    /// graceful stop need not wait for them).
    pub fn stop_streams(&self) {
        self.0.stop.cancel();
    }

    /// How many reads of the fleet this dashboard made, and how long they
    /// took together.
    pub fn read_cost(&self) -> stats::ReadCost {
        self.0.collector.cost()
    }

    /// The figures now (as `GET /api/stats` answers).
    pub async fn stats(&self) -> Arc<stats::Stats> {
        self.0.collector.latest().await.0
    }
}

/// Connections the dashboard reads the fleet on (PostgreSQL).
const READING_CONNECTIONS: u32 = 2;

/// On PostgreSQL, a small pool of the dashboard's own for its reads
/// (`application_name` `herald-dashboard`), opened on first use: an open
/// page never takes a connection the worker's batches wait for. On SQLite
/// (one file, one writer; reads do not block it in WAL mode) the store's
/// pool serves.
fn reading_pool(settings: &Settings) -> Option<Store> {
    let url = settings.database_url().ok()?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options = crate::store::postgres_options(&url)
        .ok()?
        .application_name("herald-dashboard");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(READING_CONNECTIONS)
        .acquire_timeout(settings.database.acquire_timeout)
        .connect_lazy_with(options);
    Some(Store::Postgres(pool))
}

/// The page, its assets, the session, the event stream, `/api/stats`, the
/// history search and the buttons' routes; none when
/// `dashboard.enabled` is off.
pub fn router(state: DashboardState, enabled: bool) -> Router {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/assets/{name}", get(asset))
        .route(
            "/dashboard/session",
            get(session_get).post(sign_in).delete(sign_out),
        )
        .route("/dashboard/events", get(events))
        .route("/dashboard/history", get(history))
        .route("/dashboard/jobs/{id}/{action}", post(job_action))
        .route("/dashboard/kinds/{kind}/{action}", post(kind_action))
        .route("/api/stats", get(api_stats))
        .with_state(state)
}

/// The files the page is made of, compiled in.
const INDEX: &str = include_str!("page/index.html");
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("page/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("page/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("page/uPlot.min.css"),
    ),
];

/// Only herald's own files, in no frame: the buttons cannot be clicked
/// through another site's page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The page itself holds no figures: it asks for them once signed in.
async fn page() -> Response {
    let response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response();
    secure_headers(response)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, mime, body)) => secure_headers(
            (
                [
                    (header::CONTENT_TYPE, *mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no asset {name}")),
    }
}

/// The request's TCP peer, as the accept loop recorded it (none: not
/// local).
pub(crate) struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(Peer(peer.map(|info| info.0)))
    }
}

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
async fn sign_in(
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
    let access = &state.0.access;
    match access.sign_in(&key, &headers, peer) {
        Ok((session, cookie)) => {
            tracing::info!("dashboard: signed in");
            session_answer(access, session, Some(cookie))
        }
        Err(denied) => {
            tracing::info!("dashboard: sign-in refused");
            denied.into_response()
        }
    }
}

/// `GET /dashboard/session`: the session's CSRF token (a page reloaded
/// keeps its session); in development mode a local page gets a session.
async fn session_get(
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
async fn sign_out(
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

/// `GET /dashboard/events`: the figures as a server-sent event `stats`
/// every `dashboard.refresh_interval`, until the page closes.
async fn events(
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
            processes.", body = stats::Stats),
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

#[derive(Debug, Deserialize)]
struct HistoryQuery {
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
async fn history(
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

fn unavailable(e: crate::store::StoreError) -> Response {
    tracing::warn!(error = %e, "dashboard: database error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable; try again",
    )
}

/// What a button did.
#[derive(Debug, Serialize)]
struct Done {
    id: String,
    state: String,
}

/// `POST /dashboard/jobs/{id}/retry|discard|cancel`.
async fn job_action(
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

/// `POST /dashboard/kinds/{kind}/pause|resume`.
async fn kind_action(
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
