//! `tasks_task`: the application's tasks, which herald's scans read. Django
//! owns these rows in production; herald writes them only in tests and demos.

use chrono::{DateTime, Utc};

use std::collections::HashMap;

use super::{Store, StoreError, now, push_id_list, with_pool_retry_stale};

/// The selected columns. Ids are read as 8 bytes whatever width the
/// application's migrations gave them (Django's AutoField is 4 bytes).
macro_rules! columns {
    () => {
        "CAST(id AS bigint) AS id, title, status, deadline, \
         CAST(assignee_id AS bigint) AS assignee_id, \
         CAST(created_by_id AS bigint) AS created_by_id, created_at, updated_at"
    };
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub status: String,
    pub deadline: Option<DateTime<Utc>>,
    pub assignee_id: Option<i64>,
    pub created_by_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub title: String,
    pub status: String,
    pub deadline: Option<DateTime<Utc>>,
    pub assignee_id: Option<i64>,
    pub created_by_id: Option<i64>,
}

impl Store {
    pub async fn create_task(&self, new: &NewTask) -> Result<Task, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO tasks_task \
             (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
            columns!()
        );
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(&new.title)
            .bind(&new.status)
            .bind(new.deadline.map(db_time))
            .bind(new.assignee_id)
            .bind(new.created_by_id)
            .bind(db_time(now()))
            .fetch_one(pool)
            .await?))
    }

    pub async fn get_task(&self, id: i64) -> Result<Option<Task>, StoreError> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM tasks_task WHERE id = $1");
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }

    /// The tasks among `ids` that exist, by id (one query per
    /// [`super::ID_CHUNK`] ids).
    pub async fn get_tasks(&self, ids: &[i64]) -> Result<HashMap<i64, Task>, StoreError> {
        let mut tasks = HashMap::with_capacity(ids.len());
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool_retry_stale!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(concat!("SELECT ", columns!(), " FROM tasks_task WHERE id"));
                push_id_list(&mut sql, ids);
                let rows: Vec<Task> = sql.build_query_as().persistent(false).fetch_all(pool).await?;
                tasks.extend(rows.into_iter().map(|task| (task.id, task)));
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(tasks)
    }

    /// Moves a task's deadline (Django does this in production).
    pub async fn set_task_deadline(
        &self,
        id: i64,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE tasks_task SET deadline = $1, updated_at = $2 WHERE id = $3";
        with_pool_retry_stale!(self, pool => {
            let done = sqlx::query(SQL)
                .bind(deadline.map(db_time))
                .bind(db_time(now()))
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Sets a task's status (Django does this in production).
    pub async fn set_task_status(&self, id: i64, status: &str) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE tasks_task SET status = $1, updated_at = $2 WHERE id = $3";
        with_pool_retry_stale!(self, pool => {
            let done = sqlx::query(SQL)
                .bind(status)
                .bind(db_time(now()))
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}
