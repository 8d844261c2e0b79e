//! The demo routes: `/` and its client served by default in `herald run`
//! only, and `POST /demo/token` minting only in development mode (`herald
//! run --dev`: a loopback address, the embedded store, the generated
//! secret), for a loopback peer and Host; every refusal says why.

use std::net::SocketAddr;

use herald::config::Settings;
use herald::http::demo::{Mode, routes};
use secrecy::SecretString;

use crate::helpers::http;

/// Defaults with a data directory of the test's own (the generated secret
/// lives there), then `configure`.
fn settings(configure: impl FnOnce(&mut Settings)) -> (Settings, tempfile::TempDir) {
    let mut settings = Settings::defaults();
    let dir = tempfile::tempdir().unwrap();
    settings.data_dir = dir.path().to_path_buf();
    configure(&mut settings);
    (settings, dir)
}

/// Serves `routes(settings, mode, as_if)` on a loopback port; `as_if` is the
/// address the routes believe they listen on.
async fn serve(settings: &Settings, mode: Mode, as_if: Option<SocketAddr>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(settings, mode, as_if.unwrap_or(addr)).unwrap();
    let limits = herald::http::ServeLimits {
        header_timeout: std::time::Duration::from_secs(10),
        max_pending: 64,
        grace: std::time::Duration::from_secs(1),
    };
    tokio::spawn(herald::http::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    addr
}

async fn page_status(addr: SocketAddr) -> u16 {
    http(addr, "GET", "/", &[], b"").await.unwrap().0
}

async fn raw_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

async fn mint(addr: SocketAddr, host: &str, body: &str) -> (u16, serde_json::Value) {
    let host = format!("Host: {host}");
    http(addr, "POST", "/demo/token", &[&host], body.as_bytes())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_page_is_on_by_default_in_run_only_and_can_be_switched() {
    let (defaults, _defaults_dir) = settings(|_| {});
    assert_eq!(
        page_status(serve(&defaults, Mode::AllInOne, None).await).await,
        200
    );
    assert_eq!(
        page_status(serve(&defaults, Mode::SidecarOnly, None).await).await,
        404
    );
    let (on, _on_dir) = settings(|s| s.sidecar.demo = Some(true));
    assert_eq!(
        page_status(serve(&on, Mode::SidecarOnly, None).await).await,
        200
    );
    let (off, _off_dir) = settings(|s| s.sidecar.demo = Some(false));
    let addr = serve(&off, Mode::AllInOne, None).await;
    assert_eq!(page_status(addr).await, 404);
    assert_eq!(mint(addr, "127.0.0.1", r#"{"user_id": 1}"#).await.0, 404);
}

#[tokio::test]
async fn the_page_imports_the_standalone_client() {
    let (defaults, _dir) = settings(|_| {});
    let addr = serve(&defaults, Mode::AllInOne, None).await;
    let page = raw_get(addr, "/").await;
    assert!(page.contains("text/html"), "{page}");
    assert!(page.contains(r#"import { HeraldNotifications } from "./herald-notifications.js""#));
    assert!(page.contains(r#"id="notify""#));
    let client = raw_get(addr, "/herald-notifications.js").await;
    assert!(client.contains("text/javascript"), "{client}");
    assert!(client.contains("export class HeraldNotifications"));
}

/// Development mode on the defaults (the embedded store, a loopback listen
/// address, the generated secret).
fn development(settings: &mut Settings) {
    settings.enable_development().unwrap();
}

#[tokio::test]
async fn development_tokens_are_valid_for_the_asked_user() {
    let (settings, _settings_dir) = settings(development);
    let addr = serve(&settings, Mode::AllInOne, None).await;
    for host in ["127.0.0.1", "localhost:8001", "[::1]:8001"] {
        let (status, body) = mint(addr, host, r#"{"user_id": 42}"#).await;
        assert_eq!(status, 200, "{host}: {body}");
        let token = body["access"].as_str().unwrap();
        let access = herald::tokens::validate(&settings.secret().unwrap(), token).unwrap();
        assert_eq!(access.user_id, 42);
        assert_eq!(body["expires_in"], settings.tokens.access_ttl.as_secs());
    }
}

#[tokio::test]
async fn token_requests_that_are_not_development_are_refused_with_the_reason() {
    let (embedded, _embedded_dir) = settings(development);
    let local = serve(&embedded, Mode::AllInOne, None).await;
    let (status, body) = mint(local, "attacker.example", r#"{"user_id": 1}"#).await;
    assert_eq!(
        (
            status,
            body["error"].as_str().unwrap().contains("loopback Host")
        ),
        (403, true)
    );
    let (status, body) = mint(local, "127.0.0.1", r#"{"user": 1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("user_id"),
        "{body}"
    );

    let public = serve(
        &embedded,
        Mode::AllInOne,
        Some("192.0.2.7:8001".parse().unwrap()),
    )
    .await;
    let (status, body) = mint(public, "127.0.0.1", r#"{"user_id": 1}"#).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("loopback address"),
        "{body}"
    );
    assert_eq!(page_status(public).await, 200, "the page itself is static");

    // `herald run` without --dev, behind a reverse proxy on the same machine
    // (a rewritten Host, no X-Forwarded-For, from 127.0.0.1): no token.
    let (plain, _plain_dir) = settings(|_| {});
    let addr = serve(&plain, Mode::AllInOne, None).await;
    let (status, body) = mint(addr, "127.0.0.1", r#"{"user_id": 4242}"#).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("development mode"),
        "{body}"
    );
}

/// Development mode is refused where it would hand out tokens signed with
/// the application's key or open the API beyond this machine.
#[test]
fn development_mode_needs_the_embedded_setup() {
    type Configure = fn(&mut Settings);
    let cases: [(Configure, &str); 3] = [
        (
            |s| s.secret_key = Some(SecretString::from("the-app-secret")),
            "generated secret",
        ),
        (
            |s| s.database.url = "postgres://postgres@127.0.0.1:5432/test".into(),
            "embedded SQLite",
        ),
        (|s| s.sidecar.listen = "0.0.0.0:8001".into(), "loopback"),
    ];
    for (configure, reason) in cases {
        let (mut settings, _dir) = settings(configure);
        let error = settings.enable_development().unwrap_err();
        assert_eq!(error.key, "development");
        assert!(error.reason.contains(reason), "{error}");
    }
}
