//! Authentication: the contract's order (subprotocol, `access` cookie,
//! `?token=`), the echo rules, and every failure closing with 4001 and a
//! reason that names the cause and never repeats the token.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    Next, alg_none_token, as_event, connect, expired_token, foreign_token, spawn, token,
};

/// Connects offering `protocols` and expects close 4001 with `reason`
/// before any message.
async fn refused(url: &str, protocols: &[&str], cookie: Option<&str>, reason: &str) {
    let mut client = connect(url, protocols, cookie).await;
    let (code, text) = client.closed().await;
    assert_eq!((code, text.as_str()), (4001, reason));
    for offered in protocols.iter().chain(cookie.iter()) {
        if offered.len() > 20 {
            assert!(!text.contains(*offered), "the reason repeats the token");
        }
    }
}

#[tokio::test]
async fn every_failure_has_its_reason() {
    let sidecar = spawn(|_| {}).await;
    let url = sidecar.url("");
    refused(&url, &[], None, "missing_token").await;
    refused(&url, &[&expired_token(1)], None, "expired").await;
    refused(&url, &[&foreign_token(1)], None, "bad_signature").await;
    refused(&url, &[&alg_none_token(1)], None, "alg_none").await;
    refused(&url, &["abc.def.ghi"], None, "malformed").await;
    refused(&sidecar.url("?token=garbage"), &[], None, "malformed").await;
    refused(&url, &[], Some("access=not-a-jwt"), "malformed").await;
    let refresh = crate::harness::signed(
        json!({"token_type": "refresh", "exp": crate::harness::now() + 60, "user_id": "1"}),
        crate::harness::SECRET,
    );
    refused(&url, &[&refresh], None, "wrong_token_type").await;
    let failures = sidecar.state.metrics().auth_failures;
    assert_eq!(failures.get("malformed"), Some(&3));
    assert_eq!(failures.get("expired"), Some(&1));
    assert_eq!(sidecar.state.metrics().connections_accepted, 0);
}

#[tokio::test]
async fn a_refused_client_receives_nothing_else() {
    let sidecar = spawn(|_| {}).await;
    let mut client = connect(&sidecar.url(""), &[&expired_token(5)], None).await;
    // A notification for that user published right away never reaches it.
    let row = sidecar.notification(5, "secret").await;
    sidecar.publish(&row).await;
    assert_eq!(client.closed().await.0, 4001);
    assert!(matches!(
        client.read(Duration::from_millis(300)).await,
        Next::Gone | Next::Silent
    ));
}

#[tokio::test]
async fn the_token_offered_alone_is_echoed() {
    let sidecar = spawn(|_| {}).await;
    let token = token(3, Duration::from_secs(60));
    let mut client = connect(&sidecar.url(""), &[&token], None).await;
    assert_eq!(client.protocol.as_deref(), Some(token.as_str()));
    client.ping().await;
    // Even when the token is refused, the handshake completes with the
    // echo, so a browser sees the close code.
    let expired = expired_token(3);
    let mut refused = connect(&sidecar.url(""), &[&expired], None).await;
    assert_eq!(refused.protocol.as_deref(), Some(expired.as_str()));
    assert_eq!(refused.closed().await.0, 4001);
}

#[tokio::test]
async fn a_fixed_name_beside_the_token_is_echoed_never_the_token() {
    let sidecar = spawn(|_| {}).await;
    let token = token(3, Duration::from_secs(60));
    for protocols in [["herald.v1", token.as_str()], [token.as_str(), "herald.v1"]] {
        let mut client = connect(&sidecar.url(""), &protocols, None).await;
        assert_eq!(client.protocol.as_deref(), Some("herald.v1"));
        client.ping().await;
    }
}

#[tokio::test]
async fn cookie_and_query_tokens_work_in_that_order() {
    let sidecar = spawn(|_| {}).await;
    let mine = token(8, Duration::from_secs(60));
    let cookie = format!("sessionid=abc; access={mine}");
    let mut by_cookie = connect(&sidecar.url(""), &[], Some(&cookie)).await;
    assert_eq!(by_cookie.protocol, None);
    by_cookie.ping().await;
    let mut by_query = connect(&sidecar.url(&format!("?token={mine}")), &[], None).await;
    by_query.ping().await;
    // The subprotocol comes first: a valid one wins over a bad cookie...
    let bad_cookie = format!("access={}", expired_token(8));
    let mut first = connect(&sidecar.url("?token=garbage"), &[&mine], Some(&bad_cookie)).await;
    first.ping().await;
    // ...and the cookie over the query.
    let mut second = connect(&sidecar.url("?token=garbage"), &[], Some(&cookie)).await;
    second.ping().await;
    // The first token present decides: no fallback past a bad one.
    let mut third = connect(
        &sidecar.url(&format!("?token={mine}")),
        &[],
        Some(&bad_cookie),
    )
    .await;
    assert_eq!(third.closed().await, (4001, "expired".to_string()));
    let row = sidecar.notification(8, "hello").await;
    sidecar.publish(&row).await;
    for client in [&mut by_cookie, &mut by_query, &mut first, &mut second] {
        assert_eq!(client.json().await, as_event(&row));
    }
}

#[tokio::test]
async fn another_users_notifications_are_never_reachable() {
    let sidecar = spawn(|_| {}).await;
    let mut alice = sidecar.client(1).await;
    let mut bob = sidecar.client(2).await;
    let bobs = sidecar.notification(2, "for bob").await;
    sidecar.publish(&bobs).await;
    assert_eq!(bob.json().await, as_event(&bobs));
    alice.silent(Duration::from_millis(300)).await;
    // Nor by resume or mark read.
    alice.send(json!({"type": "resume", "last_id": 0})).await;
    let resumed = alice.json().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["data"]["count"], 0);
    alice
        .send(json!({"type": "mark_read", "id": bobs.id}))
        .await;
    let answer = alice.json().await;
    assert_eq!(answer["data"]["updated"], 0);
    let row = sidecar
        .store
        .get_notification(bobs.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.is_read);
    // A token signed with another key, claiming bob, is refused.
    let mut forged = connect(&sidecar.url(""), &[&crate::harness::foreign_token(2)], None).await;
    assert_eq!(forged.closed().await.0, 4001);
}

#[tokio::test]
async fn the_cookie_is_refused_from_a_foreign_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let sidecar = spawn(|s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let mine = token(9, Duration::from_secs(60));
    let open = |origin: &'static str, subprotocol: bool| {
        let mut request = sidecar.url("").into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("origin", HeaderValue::from_static(origin));
        if subprotocol {
            headers.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&mine).unwrap(),
            );
        } else {
            let cookie = format!("access={mine}");
            headers.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
        }
        request
    };
    let read = |ws| crate::harness::Client { ws, protocol: None };
    // Cookie from a foreign page: refused.
    let (ws, _) = tokio_tungstenite::connect_async(open("https://evil.example", false))
        .await
        .unwrap();
    let mut evil = read(ws);
    assert_eq!(
        evil.closed().await,
        (4001, "origin_not_allowed".to_string())
    );
    // Cookie from the listed origin, or a subprotocol token from anywhere: fine.
    let (ws, _) = tokio_tungstenite::connect_async(open("https://app.example", false))
        .await
        .unwrap();
    read(ws).ping().await;
    let (ws, _) = tokio_tungstenite::connect_async(open("https://evil.example", true))
        .await
        .unwrap();
    read(ws).ping().await;
    let failures = sidecar.state.metrics().auth_failures;
    assert_eq!(failures.get("origin_not_allowed"), Some(&1));
}

/// With the application's user table in the database, only tokens of users
/// that exist and are active get a socket; answers are cached for
/// `user_cache_ttl`, and `off` turns the check off.
#[tokio::test]
async fn only_live_users_get_a_socket() {
    let sidecar = spawn(|s| s.user_cache_ttl = Duration::from_millis(300)).await;
    let herald::store::Store::Sqlite(pool) = &sidecar.store else {
        unreachable!("spawn uses SQLite")
    };
    let url = sidecar.url("");
    // No auth_user table yet: `auto` does not check.
    let mut before = connect(&url, &[&token(9, Duration::from_secs(60))], None).await;
    before.ping().await;
    for sql in [
        "CREATE TABLE auth_user (id integer PRIMARY KEY, is_active bool NOT NULL)",
        "INSERT INTO auth_user VALUES (1, 1), (2, 0), (2147483647, 1)",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    refused(
        &url,
        &[&token(9, Duration::from_secs(60))],
        None,
        "user_not_found",
    )
    .await;
    refused(
        &url,
        &[&token(2, Duration::from_secs(60))],
        None,
        "user_inactive",
    )
    .await;
    for user in [1, 2147483647] {
        let mut client = connect(&url, &[&token(user, Duration::from_secs(60))], None).await;
        client.ping().await;
    }
    // Within the ttl the answer is reused; after it, the change shows.
    sqlx::query("UPDATE auth_user SET is_active = 0 WHERE id = 1")
        .execute(pool)
        .await
        .unwrap();
    connect(&url, &[&token(1, Duration::from_secs(60))], None)
        .await
        .ping()
        .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    refused(
        &url,
        &[&token(1, Duration::from_secs(60))],
        None,
        "user_inactive",
    )
    .await;
    let failures = sidecar.state.metrics().auth_failures;
    assert_eq!(failures.get("user_inactive"), Some(&2));

    let unchecked = spawn(|s| s.user_check = herald::config::UserCheckMode::Off).await;
    let herald::store::Store::Sqlite(pool) = &unchecked.store else {
        unreachable!("spawn uses SQLite")
    };
    sqlx::query("CREATE TABLE auth_user (id integer PRIMARY KEY, is_active bool NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    connect(
        &unchecked.url(""),
        &[&token(9, Duration::from_secs(60))],
        None,
    )
    .await
    .ping()
    .await;
}
