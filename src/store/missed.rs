//! What a client missed: the rows a replay (resume, or the sidecar's own
//! resync) sends, without gaps.
//!
//! Ids are taken when a row is inserted, not when it commits, so with
//! transactions committing in parallel (herald's batches, the application's
//! own requests) a row can commit after one with a higher id was delivered.
//! A replay from position N therefore also reads the rows with ids below N
//! created within `lookback` of row N (the newest `limit` of them): any
//! transaction shorter than `lookback` is caught (herald's own transactions last milliseconds; the
//! application's request transactions must stay under it). Clients
//! de-duplicate by id (the contract asks them to); the sidecar skips what it
//! already sent on the connection. A row committed while its user is
//! connected needs none of this: it is published after its commit, to a
//! group the connection joined before it read the database.

use chrono::{DateTime, TimeDelta, Utc};

use super::{Notification, Store, StoreError, notification_columns, with_pool_retry_stale};

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// After the client's last seen id.
    After(i64),
    /// Everything created since then (a connection that has seen nothing).
    Since(DateTime<Utc>),
}

/// A replay's rows, oldest id first, and whether they can be trusted to be
/// complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Missed {
    pub rows: Vec<Notification>,
    /// True when `limit` rows past the position were read (more may follow).
    pub more: bool,
    /// False when the position's row is not the user's (deleted, or never
    /// theirs): rows committed late below it cannot be bounded, only the
    /// rows after it are read.
    pub recovered: bool,
}

impl Store {
    /// The user's rows after `position` (at most `limit`), plus those
    /// below it created within `lookback` of it.
    pub async fn missed_notifications(
        &self,
        user_id: i64,
        position: Position,
        lookback: TimeDelta,
        limit: i64,
    ) -> Result<Missed, StoreError> {
        let limit = limit.clamp(1, super::PAGE_LIMIT);
        let (after, window) = match position {
            Position::After(id) => (
                id,
                self.created_at(user_id, id).await?.map(|at| at - lookback),
            ),
            Position::Since(at) => (i64::MAX, Some(at - lookback)),
        };
        let late = match (position, window) {
            (_, Some(from)) => self.created_since(user_id, from, after, limit).await?,
            _ => Vec::new(),
        };
        let page = match position {
            Position::After(id) => self.list_notifications_after(user_id, id, limit).await?,
            Position::Since(_) => Vec::new(),
        };
        let read = match position {
            Position::After(_) => page.len(),
            Position::Since(_) => late.len(),
        };
        let more = read as i64 >= limit;
        let known = matches!(position, Position::After(0) | Position::Since(_)) || window.is_some();
        let mut rows = late;
        rows.extend(page);
        Ok(Missed {
            rows,
            more,
            recovered: known,
        })
    }

    /// `created_at` of the user's row `id`, if it is theirs.
    async fn created_at(&self, user_id: i64, id: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        const SQL: &str =
            "SELECT created_at FROM notifications_notification WHERE id = $1 AND user_id = $2";
        if id <= 0 {
            return Ok(None);
        }
        with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(SQL)
            .bind(id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?))
    }

    /// The user's rows created at or after `from` with ids below `up_to`:
    /// the newest `limit` of them (those nearest the position, which a
    /// client most likely lacks), oldest first.
    async fn created_since(
        &self,
        user_id: i64,
        from: DateTime<Utc>,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            notification_columns!(),
            " FROM notifications_notification WHERE user_id = $1 AND id < $2 \
             AND created_at >= $3 ORDER BY id DESC LIMIT $4"
        );
        let mut rows: Vec<Notification> = with_pool_retry_stale!(self, pool => Ok(sqlx::query_as(SQL)
            .bind(user_id)
            .bind(up_to)
            .bind(db_time(from))
            .bind(limit)
            .fetch_all(pool)
            .await?))?;
        rows.reverse();
        Ok(rows)
    }
}
