//! `notifications_notification`: create (idempotent on user + dedup_key),
//! list after an id, mark read, count unread.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{Store, StoreError, now, with_pool};

/// Largest page `list_after` returns, whatever the caller asks.
pub const PAGE_LIMIT: i64 = 500;

/// The selected columns, as a macro so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, user_id, title, message, type AS notification_type, is_read, \
         created_at, data, dedup_key"
    };
}

/// A notification row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub message: String,
    /// The Django model's `type` column.
    pub notification_type: String,
    pub is_read: bool,
    pub created_at: DateTime<Utc>,
    pub data: Option<Json<Value>>,
    pub dedup_key: Option<String>,
}

/// What a job asks to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub user_id: i64,
    pub title: String,
    pub message: String,
    pub notification_type: String,
    pub data: Value,
    /// At most one notification per (user, dedup_key).
    pub dedup_key: Option<String>,
}

/// The outcome of an idempotent insert: a new row, or the one already there.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted<T> {
    New(T),
    Existing(T),
}

impl<T> Inserted<T> {
    pub fn is_new(&self) -> bool {
        matches!(self, Inserted::New(_))
    }

    pub fn into_inner(self) -> T {
        match self {
            Inserted::New(row) | Inserted::Existing(row) => row,
        }
    }
}

impl Store {
    /// Inserts the notification unless one with the same (user, dedup_key)
    /// exists; either way returns the row, saying which case it was.
    pub async fn create_notification(
        &self,
        new: &NewNotification,
    ) -> Result<Inserted<Notification>, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO notifications_notification \
             (user_id, title, message, type, is_read, created_at, data, dedup_key) \
             VALUES ($1, $2, $3, $4, false, $5, $6, $7) \
             ON CONFLICT (user_id, dedup_key) DO NOTHING RETURNING ",
            columns!()
        );
        const EXISTING: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM notifications_notification WHERE user_id = $1 AND dedup_key = $2"
        );
        with_pool!(self, pool => {
            let row: Option<Notification> = sqlx::query_as(INSERT)
                .bind(new.user_id)
                .bind(&new.title)
                .bind(&new.message)
                .bind(&new.notification_type)
                .bind(db_time(now()))
                .bind(Json(&new.data))
                .bind(&new.dedup_key)
                .fetch_optional(pool)
                .await?;
            if let Some(row) = row {
                return Ok(Inserted::New(row));
            }
            let row: Notification = sqlx::query_as(EXISTING)
                .bind(new.user_id)
                .bind(&new.dedup_key)
                .fetch_one(pool)
                .await?;
            Ok(Inserted::Existing(row))
        })
    }

    /// The user's notifications with id greater than `after_id`, oldest
    /// first, at most `limit` (capped at [`PAGE_LIMIT`]).
    pub async fn list_notifications_after(
        &self,
        user_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM notifications_notification WHERE user_id = $1 AND id > $2 \
             ORDER BY id ASC LIMIT $3"
        );
        let limit = limit.clamp(0, PAGE_LIMIT);
        with_pool!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(user_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Marks one of the user's notifications read; false when the user has
    /// no notification with that id.
    pub async fn mark_read(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE notifications_notification SET is_read = true WHERE user_id = $1 AND id = $2";
        with_pool!(self, pool => {
            let done = sqlx::query(SQL).bind(user_id).bind(id).execute(pool).await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Marks every unread notification of the user read; returns how many.
    pub async fn mark_all_read(&self, user_id: i64) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE notifications_notification SET is_read = true \
                           WHERE user_id = $1 AND NOT is_read";
        with_pool!(self, pool => {
            let done = sqlx::query(SQL).bind(user_id).execute(pool).await?;
            Ok(done.rows_affected())
        })
    }

    pub async fn unread_count(&self, user_id: i64) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT count(*) FROM notifications_notification WHERE user_id = $1 AND NOT is_read";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL).bind(user_id).fetch_one(pool).await?))
    }

    pub async fn get_notification(&self, id: i64) -> Result<Option<Notification>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM notifications_notification WHERE id = $1"
        );
        with_pool!(self, pool => Ok(sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }
}
