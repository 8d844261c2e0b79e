//! Connection limits: the process total (1013) and per user (4029), each
//! answered with its close code while other clients carry on.

use std::time::Duration;

use crate::harness::{connect, spawn, token};

#[tokio::test]
async fn total_and_per_user_limits() {
    let sidecar = spawn(|s| {
        s.max_connections = 3;
        s.max_connections_per_user = 2;
    })
    .await;
    let url = sidecar.url("");
    let mut a1 = sidecar.client(1).await;
    let _a2 = sidecar.client(1).await;
    let mut a3 = connect(&url, &[&token(1, Duration::from_secs(60))], None).await;
    assert_eq!(
        a3.closed().await,
        (4029, "too_many_connections".to_string())
    );
    let _b1 = sidecar.client(2).await;
    let mut b2 = connect(&url, &[&token(2, Duration::from_secs(60))], None).await;
    assert_eq!(b2.closed().await, (1013, "server_full".to_string()));
    a1.ping().await;
    assert_eq!(sidecar.state.metrics().connections_refused, 2);
    drop(a1);
    sidecar
        .until("a place is free", |s| s.open_connections() == 2)
        .await;
    let mut b3 = sidecar.client(2).await;
    b3.ping().await;
}
