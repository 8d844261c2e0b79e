//! What the application's tables accept, read from the database itself:
//! the lengths of `notifications_notification`'s text columns and the
//! widths of the user and task ids (Django makes them 4 or 8 bytes, and its
//! migrations change them while herald runs). Submission checks jobs
//! against these, so a job the database would refuse is refused at once,
//! naming the field, instead of dying after its attempts. Cached per
//! database for [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Store, StoreError, with_pool_retry_stale};

/// How long limits read from a database are reused.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Column sizes (characters; `None`: unbounded) and the largest id each id
/// column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnLimits {
    pub title: Option<usize>,
    pub notification_type: Option<usize>,
    pub dedup_key: Option<usize>,
    pub user_id_max: i64,
    pub task_id_max: i64,
}

impl Default for ColumnLimits {
    /// Herald's own tables (migrations/): 8-byte ids, Django's lengths.
    fn default() -> Self {
        ColumnLimits {
            title: Some(255),
            notification_type: Some(50),
            dedup_key: Some(255),
            user_id_max: i64::MAX,
            task_id_max: i64::MAX,
        }
    }
}

/// One column as the catalog describes it.
#[derive(Debug, sqlx::FromRow)]
struct Column {
    table_name: String,
    column_name: String,
    /// `integer`, `bigint`, `character varying`, ... (SQLite: the declared
    /// type, such as `varchar(255)`).
    data_type: String,
    max_length: Option<i32>,
}

const POSTGRES: &str = "SELECT CAST(table_name AS text) AS table_name, \
     CAST(column_name AS text) AS column_name, CAST(data_type AS text) AS data_type, \
     CAST(character_maximum_length AS integer) AS max_length \
     FROM information_schema.columns WHERE table_schema = current_schema() \
     AND table_name IN ('notifications_notification', 'tasks_task')";

const SQLITE: &str = "SELECT 'notifications_notification' AS table_name, name AS column_name, \
     lower(type) AS data_type, NULL AS max_length \
     FROM pragma_table_info('notifications_notification') \
     UNION ALL SELECT 'tasks_task', name, lower(type), NULL FROM pragma_table_info('tasks_task')";

static CACHE: Mutex<Option<HashMap<String, (ColumnLimits, Instant)>>> = Mutex::new(None);

impl Store {
    /// The limits of this database's tables, read at most every
    /// [`CACHE_TTL`].
    pub async fn column_limits(&self) -> Result<ColumnLimits, StoreError> {
        let key = self.identity();
        if let Some((limits, at)) = lock().get_or_insert_with(HashMap::new).get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(*limits);
        }
        self.fresh_column_limits().await
    }

    /// The limits read now (and cached), for when a cached answer refused.
    pub async fn fresh_column_limits(&self) -> Result<ColumnLimits, StoreError> {
        let limits = self.read_column_limits().await?;
        lock()
            .get_or_insert_with(HashMap::new)
            .insert(self.identity(), (limits, Instant::now()));
        Ok(limits)
    }

    async fn read_column_limits(&self) -> Result<ColumnLimits, StoreError> {
        let columns: Vec<Column> = match self {
            Store::Postgres(_) => {
                with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(POSTGRES).fetch_all(pool).await?))?
            }
            Store::Sqlite(_) => {
                with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQLITE).fetch_all(pool).await?))?
            }
        };
        let mut limits = ColumnLimits::default();
        // SQLite keeps every INTEGER in 8 bytes, whatever the declared type.
        let sqlite = matches!(self, Store::Sqlite(_));
        for column in &columns {
            let length = column
                .max_length
                .map(|n| n as usize)
                .or_else(|| declared_length(&column.data_type));
            let width = if sqlite {
                i64::MAX
            } else {
                id_max(&column.data_type)
            };
            match (column.table_name.as_str(), column.column_name.as_str()) {
                ("notifications_notification", "title") => limits.title = length,
                ("notifications_notification", "type") => limits.notification_type = length,
                ("notifications_notification", "dedup_key") => limits.dedup_key = length,
                ("notifications_notification", "user_id") => limits.user_id_max = width,
                ("tasks_task", "id") => limits.task_id_max = width,
                _ => {}
            }
        }
        Ok(limits)
    }

    /// Which database this is, for the cache: its host, port and name, or
    /// its file.
    fn identity(&self) -> String {
        match self {
            Store::Postgres(pool) => {
                let options = pool.connect_options();
                format!(
                    "postgres://{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                )
            }
            Store::Sqlite(pool) => format!(
                "sqlite://{}",
                pool.connect_options().get_filename().display()
            ),
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<String, (ColumnLimits, Instant)>>> {
    CACHE.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// `varchar(255)` -> 255 (SQLite keeps the declared type as written).
fn declared_length(declared: &str) -> Option<usize> {
    let (_, rest) = declared.split_once('(')?;
    rest.trim_end_matches(')').trim().parse().ok()
}

/// The largest id an integer column of this type holds.
fn id_max(data_type: &str) -> i64 {
    match data_type {
        "integer" | "int4" | "int" | "serial" => i64::from(i32::MAX),
        "smallint" | "int2" => i64::from(i16::MAX),
        // SQLite's INTEGER and PostgreSQL's bigint are 8 bytes.
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_read_as_limits() {
        assert_eq!(declared_length("varchar(255)"), Some(255));
        assert_eq!(declared_length("varchar"), None);
        assert_eq!(declared_length("text"), None);
        assert_eq!(id_max("integer"), 2_147_483_647);
        assert_eq!(id_max("bigint"), i64::MAX);
    }
}
