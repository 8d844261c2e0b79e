//! What the benchmarks share: their environment, fresh PostgreSQL
//! databases and the cleanup of the Redis keys a run made.
#![allow(dead_code)]

use std::time::Duration;

use herald::store::{PoolOptions, Store};
use sqlx::Connection;

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub(crate) fn env_number(name: &str, default: usize) -> usize {
    env_or(name, &default.to_string())
        .parse()
        .unwrap_or(default)
}

/// A fresh, migrated PostgreSQL database: its URL and a store on it.
pub(crate) async fn fresh_database(admin: &str, tag: &str) -> (String, Store) {
    let name = format!("herald_bench_{tag}_{}", uuid::Uuid::new_v4().simple());
    create_database(admin, &name).await;
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    (url.clone(), migrated_store(&url).await)
}

/// Creates the empty database `name` on the server of `admin`.
pub(crate) async fn create_database(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("PostgreSQL answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A store on `url` (room for the bench's concurrency), herald's
/// migrations applied.
pub(crate) async fn migrated_store(url: &str) -> Store {
    let options = PoolOptions {
        max_connections: 20,
        acquire_timeout: Duration::from_secs(60),
    };
    let store = Store::connect(url, options).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Whether no job waits and no notification is unpublished. Probes for one
/// row each (index scans that stop at the first hit), where counting would
/// scan the whole ledger ten times a second, loading the server measured.
pub(crate) async fn all_published(store: &Store) -> bool {
    let Store::Postgres(pool) = store else {
        unreachable!("the benches store on PostgreSQL")
    };
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM herald_jobs WHERE state IN ('queued', 'retrying')) \
         AND NOT EXISTS (SELECT 1 FROM herald_outbox)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) async fn drop_database(admin: &str, url: &str) {
    let name = url.rsplit_once('/').unwrap().1;
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await;
}

/// Deletes the Redis keys a run made (queue and layer share `prefix`).
pub(crate) async fn drop_redis_keys(redis: &str, prefix: &str) {
    let client = redis::Client::open(redis).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
