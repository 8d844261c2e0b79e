//! The SQLite queue: a file of its own in data_dir (`queue.sqlite3`), in WAL
//! mode with `synchronous=FULL`. apalis's own `setup` would turn syncing
//! off, so its migrations are run here instead.

use std::str::FromStr;
use std::time::Duration;

use apalis_sqlite::SqliteStorage;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::QueueError;
use crate::config::Settings;

/// Opens (creating when missing) the queue file and migrates apalis's tables.
pub(super) async fn connect(settings: &Settings) -> Result<SqlitePool, QueueError> {
    std::fs::create_dir_all(&settings.data_dir)?;
    let path = settings.data_dir.join("queue.sqlite3");
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    SqliteStorage::migrations().run(&pool).await?;
    Ok(pool)
}
