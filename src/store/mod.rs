//! The store: notifications and tasks in SQLite (embedded) or PostgreSQL
//! (shared with Django), through sqlx.
//!
//! Both backends run the same SQL text (`$N` placeholders work in both); the
//! [`with_pool!`] macro expands one body per backend, and the only value
//! bound differently is time (see `db_time` in each arm).

mod fleet;
mod history;
mod ignored;
mod jobs;
mod limits;
mod missed;
mod notifications;
mod outbox;
mod replies;
mod revoked;
mod scans;
mod schedule;
mod stale;
mod tasks;
mod users;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use fleet::{Beat, OutboxBacklog, ProcessRow, SampleRow, ScanRun};
pub use history::{JobSearch, OpenCount, Refusal};
pub use jobs::{JobRecord, JobState, NewJob, Recorded};
pub use limits::ColumnLimits;
pub use missed::{LATE_LIMIT, Missed, Position};
pub use notifications::{Created, Inserted, NewNotification, Notification, PAGE_LIMIT};
pub use outbox::Unpublished;
pub use revoked::Revoked;
pub use scans::{ReminderWindow, humanize};
pub use tasks::{NewTask, Task};
pub use users::{UserStatus, UserTable};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a new notification's outbox entry waits before the retry loop
/// may publish it: the job that created it publishes it first.
pub const OUTBOX_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Rows (or ids) per statement where a list is bound: under the 65,535
/// parameters a PostgreSQL statement takes, and SQLite's 32,766.
pub(crate) const ID_CHUNK: usize = 5000;

/// A list membership test over `ids`, for either database (and the queue's
/// SQLite): ` = ANY($n)` with one array parameter on PostgreSQL, so the
/// statement is the same whatever the list's length and plans cheaply;
/// ` IN ($1, $2, ...)` on SQLite, which has no arrays.
///
/// Callers run the statement with `.persistent(false)`: planned for each
/// list, PostgreSQL sees the array as a constant (hashed membership test)
/// and the table's current size. A cached generic plan keeps whatever was
/// chosen while the table was small (a sequential scan testing each row
/// against the array element by element) until the table is next analyzed.
pub fn push_id_list<DB, T>(sql: &mut sqlx::QueryBuilder<DB>, ids: &[T])
where
    DB: sqlx::Database,
    T: IdList<DB>,
{
    T::push_list(sql, ids);
}

/// How a list of `Self` is bound in [`push_id_list`] on `DB`.
pub trait IdList<DB: sqlx::Database>: Sized {
    fn push_list(sql: &mut sqlx::QueryBuilder<DB>, ids: &[Self]);
}

impl<T> IdList<sqlx::Postgres> for T
where
    T: Clone + sqlx::postgres::PgHasArrayType + for<'q> sqlx::Encode<'q, sqlx::Postgres>,
    T: sqlx::Type<sqlx::Postgres> + Send + 'static,
{
    fn push_list(sql: &mut sqlx::QueryBuilder<sqlx::Postgres>, ids: &[T]) {
        sql.push(" = ANY(");
        sql.push_bind(ids.to_vec());
        sql.push(")");
    }
}

impl<T> IdList<sqlx::Sqlite> for T
where
    T: Clone + for<'q> sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'static,
{
    fn push_list(sql: &mut sqlx::QueryBuilder<sqlx::Sqlite>, ids: &[T]) {
        sql.push(" IN (");
        let mut list = sql.separated(", ");
        for id in ids {
            list.push_bind(id.clone());
        }
        sql.push(")");
    }
}

/// Errors from the store; callers mostly retry `Database` and report the rest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {}", describe(.0))]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("a concurrent change conflicted; try again")]
    Conflict,
    /// The application's table lacks what herald needs and herald must not
    /// add it itself.
    #[error("{0}")]
    Schema(String),
}

impl StoreError {
    /// Whether the database refused the data itself, so trying again cannot
    /// succeed: SQLSTATE class 22 (data exception: a value too long, a NUL
    /// character, a number out of range) or 23 (integrity: a foreign key to
    /// a missing user, a missing value), except unique violations, which
    /// concurrent writers cause and a retry resolves.
    pub fn is_permanent(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        let code = db.code().unwrap_or_default();
        match db.kind() {
            sqlx::error::ErrorKind::ForeignKeyViolation
            | sqlx::error::ErrorKind::NotNullViolation
            | sqlx::error::ErrorKind::CheckViolation => true,
            sqlx::error::ErrorKind::UniqueViolation => false,
            _ => code.starts_with("22") || (code.starts_with("23") && code != "23505"),
        }
    }
}

/// A database error in words a client may read: the server's message and
/// its SQLSTATE, without the PostgreSQL source file and line sqlx adds.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on one of the two databases; cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Pool knobs from configuration.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// Runs `$body` with `$pool` bound to the backend's pool and `db_time`
/// converting a `DateTime<Utc>` to what that backend stores.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => {
                #[allow(unused_imports)]
                use $crate::store::sqlite_time as db_time;
                $body
            }
            $crate::store::Store::Postgres($pool) => {
                #[allow(unused_imports)]
                use $crate::store::postgres_time as db_time;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// The columns of a [`Notification`] as selected or returned. Ids are read
/// as 8 bytes whatever width the application's migrations gave them
/// (Django's AutoField, and every foreign key to the default `auth.User`,
/// is 4 bytes).
macro_rules! notification_columns {
    () => {
        "CAST(id AS bigint) AS id, CAST(user_id AS bigint) AS user_id, title, message, \
         type AS notification_type, is_read, created_at, data, dedup_key"
    };
}
pub(crate) use notification_columns;

/// [`with_pool!`] for statements on the application's tables, which its
/// Django migrations may change while herald runs. On PostgreSQL, a body
/// that fails because a statement was prepared before such a change runs
/// once more on a fresh connection (see [`stale`]). `$body` is evaluated as
/// an async block whose value is a `Result<_, StoreError>`.
macro_rules! with_pool_retry_stale {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => {
                #[allow(unused_imports)]
                use $crate::store::sqlite_time as db_time;
                $body
            }
            $crate::store::Store::Postgres($pool) => {
                #[allow(unused_imports)]
                use $crate::store::postgres_time as db_time;
                let first: Result<_, $crate::store::StoreError> = async { $body }.await;
                match first {
                    Err(error) if $crate::store::stale::is_stale_plan(&error) => {
                        $crate::store::stale::retire_connections();
                        async { $body }.await
                    }
                    other => other,
                }
            }
        }
    };
}
pub(crate) use with_pool_retry_stale;

/// SQLite keeps times as Django does: `YYYY-MM-DD HH:MM:SS.ffffff`, UTC.
pub(crate) fn sqlite_time(at: DateTime<Utc>) -> chrono::NaiveDateTime {
    at.naive_utc()
}

/// PostgreSQL keeps `timestamp with time zone`.
pub(crate) fn postgres_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at
}

/// Now, truncated to the microseconds both databases keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// Opens a pool for `url` (`sqlite://PATH` or `postgres://...`). SQLite
    /// files are created when missing and run in WAL mode with
    /// `synchronous=FULL`: a committed row survives a process or OS crash.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = connect.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Url(e.to_string()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .before_acquire(|_, meta| Box::pin(async move { Ok(!stale::is_retired(meta.age)) }))
                .connect_with(postgres_options(url)?)
                .await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url("expected sqlite:// or postgres://".into()))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Store::Sqlite(_) => &SQLITE_MIGRATIONS,
            Store::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations; returns the versions applied now (empty
    /// when the database was already current).
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        if self.backend() == Backend::Sqlite {
            self.check_sqlite_dedup_key().await?;
        }
        let before = self.applied_migrations().await?;
        with_pool!(self, pool => self.migrator().run(pool).await?);
        let after = self.applied_migrations().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// On SQLite, herald never alters a notifications table it did not
    /// create: Django rebuilds SQLite tables from its own model state, so a
    /// column only herald knew of would be dropped at the application's next
    /// migration. The application adds `dedup_key` and its unique constraint
    /// with a Django migration (docs/django.md) before `herald migrate`.
    async fn check_sqlite_dedup_key(&self) -> Result<(), StoreError> {
        const COLUMN: &str = "SELECT count(*) FROM pragma_table_info('notifications_notification') \
             WHERE name = 'dedup_key'";
        const UNIQUE: &str = "SELECT count(*) FROM pragma_index_list('notifications_notification') AS l \
             WHERE l.\"unique\" AND (SELECT group_concat(name, ',') FROM \
             (SELECT name FROM pragma_index_info(l.name) ORDER BY seqno)) = 'user_id,dedup_key'";
        if !self.has_table("notifications_notification").await? {
            return Ok(());
        }
        let Store::Sqlite(pool) = self else {
            return Ok(());
        };
        let column: i64 = sqlx::query_scalar(COLUMN).fetch_one(pool).await?;
        let unique: i64 = sqlx::query_scalar(UNIQUE).fetch_one(pool).await?;
        if column == 1 && unique > 0 {
            return Ok(());
        }
        Err(StoreError::Schema(
            "notifications_notification exists without the dedup_key column and its unique \
             (user_id, dedup_key) constraint; on SQLite the application adds them with a \
             Django migration (docs/django.md, \"The dedup key\"), then runs herald migrate again"
                .into(),
        ))
    }

    /// Versions recorded in sqlx's `_sqlx_migrations` table.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        const EXISTS_SQLITE: &str =
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";
        const EXISTS_PG: &str = "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'";
        let exists_sql = match self.backend() {
            Backend::Sqlite => EXISTS_SQLITE,
            Backend::Postgres => EXISTS_PG,
        };
        const LIST: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        with_pool!(self, pool => {
            let exists: i64 = sqlx::query_scalar(exists_sql).fetch_one(pool).await?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            Ok(sqlx::query_scalar(LIST).fetch_all(pool).await?)
        })
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// The connection options of a PostgreSQL URL. When neither the URL nor
/// `PGSSLMODE` names an `sslmode`, libpq's `prefer` applies (TLS when the
/// server offers it), except on this host (loopback or a Unix socket),
/// where TLS protects nothing and costs every statement its encryption:
/// there it is `disable`.
pub fn postgres_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let options = PgConnectOptions::from_str(url)?;
    let named = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("sslmode=")))
        || std::env::var_os("PGSSLMODE").is_some();
    let host = options.get_host();
    let local =
        host.starts_with('/') || matches!(host, "127.0.0.1" | "::1" | "[::1]" | "localhost");
    Ok(if named || !local {
        options
    } else {
        options.ssl_mode(PgSslMode::Disable)
    })
}

#[cfg(test)]
mod tests {
    use super::postgres_options;
    use sqlx::postgres::PgSslMode;

    fn mode(url: &str) -> PgSslMode {
        postgres_options(url).unwrap().get_ssl_mode()
    }

    #[test]
    fn tls_is_off_on_this_host_unless_the_url_asks_for_it() {
        for local in [
            "postgres://u@127.0.0.1:5432/app",
            "postgres://u@localhost/app",
            "postgresql://u@[::1]:5432/app",
            "postgres:///app?host=/var/run/postgresql",
        ] {
            assert!(matches!(mode(local), PgSslMode::Disable), "{local}");
        }
        assert!(matches!(
            mode("postgres://u@127.0.0.1/app?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.internal/app"),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres://u@10.0.0.5/app?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
    }
}
