//! The PostgreSQL queue: the database of `database.url`, apalis's tables in
//! the `apalis` schema (the pool's search path), its migration history kept
//! there too, apart from herald's.

use apalis_postgres::PostgresStorage;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::QueueError;
use crate::config::Settings;
use crate::store::postgres_options;

/// Creates the `apalis` schema when missing, then opens the pool on it and
/// migrates apalis's tables.
pub(super) async fn connect(settings: &Settings, database: &str) -> Result<PgPool, QueueError> {
    let pool = PgPool::connect_with(postgres_options(database)?).await?;
    // Two processes starting at once would both create the schema
    // (IF NOT EXISTS is not atomic): one waits for the other.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('herald.apalis_schema'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS apalis")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    pool.close().await;
    let options = postgres_options(database)?.options([("search_path", "apalis")]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(settings.database.acquire_timeout)
        .connect_with(options)
        .await?;
    PostgresStorage::migrations().run(&pool).await?;
    Ok(pool)
}
