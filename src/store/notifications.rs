//! `notifications_notification`: create (idempotent on user + dedup_key),
//! list after an id, mark read, count unread.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use std::collections::HashMap;

use super::outbox::{AddEntry, Unpublished};
use super::{Store, StoreError, now, push_id_list, with_pool_retry_stale};

/// Largest page `list_after` returns, whatever the caller asks.
pub const PAGE_LIMIT: i64 = 500;

use super::notification_columns as columns;

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

const EXISTING: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications_notification WHERE user_id = $1 AND dedup_key = $2"
);

/// The insert of [`Store::create_notifications`] on one connection (in its
/// transaction): the rows that did not exist; returns them.
trait InsertRows {
    async fn insert_rows(
        self,
        batch: &[NewNotification],
        created_at: DateTime<Utc>,
    ) -> Result<Vec<Notification>, sqlx::Error>;
}

/// The publisher gets the first try right after commit; the outbox is the
/// fallback after a grace period.
fn outbox_due(created_at: DateTime<Utc>) -> DateTime<Utc> {
    created_at + super::OUTBOX_GRACE
}

/// SQLite: one multi-row VALUES statement.
impl InsertRows for &mut sqlx::SqliteConnection {
    async fn insert_rows(
        self,
        batch: &[NewNotification],
        created_at: DateTime<Utc>,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        use super::sqlite_time as db_time;
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO notifications_notification \
             (user_id, title, message, type, is_read, created_at, data, dedup_key) ",
        );
        insert.push_values(batch, |mut row, new| {
            row.push_bind(new.user_id)
                .push_bind(new.title.clone())
                .push_bind(new.message.clone())
                .push_bind(new.notification_type.clone())
                .push_bind(false)
                .push_bind(db_time(created_at))
                .push_bind(Json(new.data.clone()))
                .push_bind(new.dedup_key.clone());
        });
        insert.push(concat!(
            " ON CONFLICT (user_id, dedup_key) DO NOTHING RETURNING ",
            columns!()
        ));
        insert.build_query_as().fetch_all(self).await
    }
}

/// PostgreSQL: each column bound as one array and unnested, so the
/// statement is the same text whatever the batch's size (prepared once,
/// planned cheaply, a handful of parameters instead of thousands).
impl InsertRows for &mut sqlx::PgConnection {
    async fn insert_rows(
        self,
        batch: &[NewNotification],
        created_at: DateTime<Utc>,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        const INSERT: &str = concat!(
            "INSERT INTO notifications_notification \
             (user_id, title, message, type, is_read, created_at, data, dedup_key) \
             SELECT u, t, m, ty, false, $5, d::jsonb, k FROM unnest($1::bigint[], $2::text[], \
             $3::text[], $4::text[], $6::text[], $7::text[]) AS x (u, t, m, ty, d, k) \
             ON CONFLICT (user_id, dedup_key) DO NOTHING RETURNING ",
            columns!()
        );
        let column =
            |get: fn(&NewNotification) -> String| batch.iter().map(get).collect::<Vec<_>>();
        sqlx::query_as(INSERT)
            .bind(batch.iter().map(|new| new.user_id).collect::<Vec<_>>())
            .bind(column(|new| new.title.clone()))
            .bind(column(|new| new.message.clone()))
            .bind(column(|new| new.notification_type.clone()))
            .bind(created_at)
            .bind(column(|new| new.data.to_string()))
            .bind(
                batch
                    .iter()
                    .map(|new| new.dedup_key.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(self)
            .await
    }
}

/// Pairs inserted rows with the requests that made them: keyed requests by
/// (user, key), unkeyed ones in order. `None` marks a conflict.
fn match_inserted(
    batch: &[NewNotification],
    inserted: Vec<Notification>,
) -> Vec<Option<Inserted<Notification>>> {
    let mut keyed = std::collections::HashMap::new();
    let mut unkeyed = std::collections::VecDeque::new();
    for row in inserted {
        match &row.dedup_key {
            Some(key) => {
                keyed.insert((row.user_id, key.clone()), row);
            }
            None => unkeyed.push_back(row),
        }
    }
    batch
        .iter()
        .map(|new| match &new.dedup_key {
            Some(key) => keyed.remove(&(new.user_id, key.clone())).map(Inserted::New),
            None => unkeyed.pop_front().map(Inserted::New),
        })
        .collect()
}

/// What [`Store::create_notifications`] did: an answer per request, in
/// order, and the new rows with their outbox entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Created {
    pub answers: Vec<Inserted<Notification>>,
    pub unpublished: Unpublished,
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
    /// exists; either way returns the row, saying which case it was. A new
    /// row is queued in the outbox in the same transaction.
    pub async fn create_notification(
        &self,
        new: &NewNotification,
    ) -> Result<Inserted<Notification>, StoreError> {
        let mut created = self.create_notifications(std::slice::from_ref(new)).await?;
        Ok(created.answers.remove(0))
    }

    /// Inserts many notifications in one transaction (a group commit): new
    /// rows and one outbox entry for them commit together; rows whose (user,
    /// dedup_key) exists come back as `Existing`. Answers in input order.
    pub async fn create_notifications(
        &self,
        batch: &[NewNotification],
    ) -> Result<Created, StoreError> {
        if batch.is_empty() {
            return Ok(Created::default());
        }
        let created_at = now();
        with_pool_retry_stale!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = (&mut *tx).insert_rows(batch, created_at).await?;
            let ids: Vec<i64> = inserted.iter().map(|row| row.id).collect();
            let mut entry = None;
            if !ids.is_empty() {
                entry = Some((&mut *tx).add_entry(&ids, outbox_due(created_at)).await?);
            }
            let unpublished = Unpublished { entry, rows: inserted.clone() };
            let mut answers = match_inserted(batch, inserted);
            for (answer, new) in answers.iter_mut().zip(batch) {
                if answer.is_none() {
                    let row: Notification = sqlx::query_as(EXISTING)
                        .bind(new.user_id)
                        .bind(&new.dedup_key)
                        .fetch_one(&mut *tx)
                        .await?;
                    *answer = Some(Inserted::Existing(row));
                }
            }
            tx.commit().await?;
            Ok(Created { answers: answers.into_iter().flatten().collect(), unpublished })
        })
    }

    /// The notifications among `ids` that exist, by id.
    pub async fn notifications_by_ids(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, Notification>, StoreError> {
        let mut rows = HashMap::with_capacity(ids.len());
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool_retry_stale!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(concat!(
                    "SELECT ", columns!(), " FROM notifications_notification WHERE id"
                ));
                push_id_list(&mut sql, ids);
                let found: Vec<Notification> =
                    sql.build_query_as().persistent(false).fetch_all(pool).await?;
                rows.extend(found.into_iter().map(|row| (row.id, row)));
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(rows)
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
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQL)
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
        with_pool_retry_stale!(self, pool => {
            let done = sqlx::query(SQL).bind(user_id).bind(id).execute(pool).await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Marks every unread notification of the user read; returns how many.
    pub async fn mark_all_read(&self, user_id: i64) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE notifications_notification SET is_read = true \
                           WHERE user_id = $1 AND NOT is_read";
        with_pool_retry_stale!(self, pool => {
            let done = sqlx::query(SQL).bind(user_id).execute(pool).await?;
            Ok(done.rows_affected())
        })
    }

    pub async fn unread_count(&self, user_id: i64) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT count(*) FROM notifications_notification WHERE user_id = $1 AND NOT is_read";
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(SQL).bind(user_id).fetch_one(pool).await?))
    }

    pub async fn get_notification(&self, id: i64) -> Result<Option<Notification>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM notifications_notification WHERE id = $1"
        );
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
    }
}
