//! What a client missed: the rows a replay (resume, or the sidecar's own
//! resync) sends, without gaps.
//!
//! Ids are taken when a row is inserted, not when it commits, so with
//! transactions committing in parallel (herald's batches, the application's
//! own requests) a row can commit after one with a higher id was delivered.
//! A replay from position N therefore also reads the rows with ids below N
//! created within `lookback` of row N (up to [`LATE_LIMIT`] of them; past
//! that the replay says it cannot vouch for what lies below): any
//! transaction shorter than `lookback` is caught (herald's own transactions
//! last milliseconds; the application's request transactions must stay
//! under it). Clients de-duplicate by id (the contract asks them to); the
//! sidecar skips what it already sent on the connection. A row committed
//! while its user is connected needs none of this: it is published after
//! its commit, to a group the connection joined before it read the
//! database; what the layer then drops it names ([`Position::Lost`]).

use chrono::{DateTime, TimeDelta, Utc};

use super::{Notification, Store, StoreError, notification_columns, with_pool_retry_stale};

/// Rows below a client's position that one replay reads at most: a burst
/// puts thousands of rows inside `lookback`, nearly all delivered; past
/// this many the replay answers `recovered: false`.
pub const LATE_LIMIT: i64 = 2000;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// After the client's last seen id, and the rows below it created
    /// within `lookback` of it.
    After(i64),
    /// Every row from this id on (a replay's next page, or a loss whose
    /// first dropped id is known): nothing below it.
    From(i64),
    /// What a channel layer lost: every row from `from_id` on, and every
    /// row created since `since` (less `lookback`), whichever starts lower.
    Lost {
        from_id: Option<i64>,
        since: Option<DateTime<Utc>>,
    },
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
    /// The user's rows from `position` on (at most `limit`), plus, for a
    /// client's position, those below it created within `lookback` of it.
    pub async fn missed_notifications(
        &self,
        user_id: i64,
        position: Position,
        lookback: TimeDelta,
        limit: i64,
    ) -> Result<Missed, StoreError> {
        let limit = limit.clamp(1, super::PAGE_LIMIT);
        let (after, late, recovered) = match position {
            Position::After(id) => {
                let window = self.created_at(user_id, id).await?.map(|at| at - lookback);
                let mut late = match window {
                    Some(from) => {
                        self.created_since(user_id, from, id, LATE_LIMIT + 1)
                            .await?
                    }
                    None => Vec::new(),
                };
                let whole = late.len() as i64 <= LATE_LIMIT;
                if !whole {
                    // The oldest is dropped: the rest is the newest LATE_LIMIT.
                    late.remove(0);
                }
                (id, late, id == 0 || (window.is_some() && whole))
            }
            Position::From(id) => (id.saturating_sub(1), Vec::new(), true),
            Position::Lost { from_id, since } => {
                let mut after = from_id.map_or(i64::MAX, |id| id.saturating_sub(1));
                if let Some(since) = since {
                    after = after.min(self.last_created_before(user_id, since - lookback).await?);
                }
                if after == i64::MAX {
                    after = 0;
                }
                (after, Vec::new(), true)
            }
        };
        let page = self.list_notifications_after(user_id, after, limit).await?;
        let more = page.len() as i64 >= limit;
        let mut rows = late;
        rows.extend(page);
        Ok(Missed {
            rows,
            more,
            recovered,
        })
    }

    /// The id of the user's newest row created before `at` (0 when none):
    /// read backwards from the newest, so it costs the rows since `at`.
    async fn last_created_before(
        &self,
        user_id: i64,
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT id FROM notifications_notification \
             WHERE user_id = $1 AND created_at < $2 ORDER BY id DESC LIMIT 1";
        let id: Option<i64> = with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(SQL)
            .bind(user_id)
            .bind(db_time(at))
            .fetch_optional(pool)
            .await?))?;
        Ok(id.unwrap_or(0))
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
