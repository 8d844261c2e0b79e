//! `herald_outbox`: notifications committed and not yet published. The
//! publisher reads what is due, publishes, and removes what went out; a
//! failed publish is retried later with backoff.

use chrono::{DateTime, Utc};

use super::{Notification, Store, StoreError, now, push_id_list, with_pool};

impl Store {
    /// Up to `limit` notifications whose publish is due, oldest first.
    pub async fn outbox_due(&self, limit: i64) -> Result<Vec<Notification>, StoreError> {
        const SQL: &str = "SELECT n.id, n.user_id, n.title, n.message, n.type AS notification_type, \
             n.is_read, n.created_at, n.data, n.dedup_key \
             FROM herald_outbox o JOIN notifications_notification n ON n.id = o.notification_id \
             WHERE o.next_attempt_at <= $1 ORDER BY o.notification_id LIMIT $2";
        with_pool!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(db_time(now()))
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Removes published notifications from the outbox.
    pub async fn outbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql =
                    sqlx::QueryBuilder::new("DELETE FROM herald_outbox WHERE notification_id");
                push_id_list(&mut sql, ids);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Counts a failed attempt and sets when to try again.
    pub async fn outbox_retry_at(&self, ids: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        for ids in ids.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "UPDATE herald_outbox SET attempts = attempts + 1, next_attempt_at = ",
                );
                sql.push_bind(db_time(at));
                sql.push(" WHERE notification_id");
                push_id_list(&mut sql, ids);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// How many notifications wait to be published.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT count(*) FROM herald_outbox";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL).fetch_one(pool).await?))
    }
}
