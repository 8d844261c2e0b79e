//! The accept loop: one hyper HTTP/1.1 connection per TCP connection, each
//! request told its TCP peer (`ConnectInfo<SocketAddr>`), so access rules
//! trust the socket and not headers a proxy may rewrite.
//!
//! What an unauthenticated client can hold is bounded: request headers must
//! arrive within `header_timeout`, and at most `max_pending` connections
//! may be open before they become WebSockets (an upgraded socket is counted
//! by the sidecar's own limits instead); more are closed at once. On
//! shutdown, connections get `grace` to finish their request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest request head (line and headers) read; a larger one is answered
/// 431 by hyper. Far above any real request, far below hyper's 400 KiB.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The bounds [`serve`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Connections open at once that are not (yet) WebSockets.
    pub max_pending: usize,
    /// How long shutdown waits for requests under way.
    pub grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_pending));
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait, do not spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(crate::telemetry::metrics::HTTP_REFUSED).increment(1);
            tracing::debug!(%peer, "too many connections before authentication; closed");
            continue;
        };
        let router = router.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            connection(stream, peer, router, limits, stopping).await;
            drop(permit);
        });
    }
    drop(listener);
    stopping.cancel();
    // Wait for the requests under way, at most `grace`: every connection
    // holds a permit until it ends or becomes a WebSocket.
    let all = u32::try_from(limits.max_pending).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.grace, permits.acquire_many(all)).await;
    Ok(())
}

/// Serves one TCP connection until it closes, upgrades, or shutdown ends it.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServeLimits,
    stopping: CancellationToken,
) {
    let service = TowerToHyperService::new(router.map_request(
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopping.cancelled() => {}
    }
    // Shutting down: finish the request under way, take no more.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.grace, conn).await;
}
