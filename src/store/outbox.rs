//! `herald_outbox`: notifications committed and not yet published. One
//! entry per group committed together (a job batch, a scan), written in the
//! same transaction as its notifications, so a batch costs one outbox row
//! however many notifications it made. The publisher deletes an entry once
//! all of it went out; after a partial failure the entry keeps only the ids
//! that failed and is retried later with backoff.

use chrono::{DateTime, Utc};

use super::{Notification, Store, StoreError, now, push_id_list, with_pool};

/// Entries one claim takes; a retry pass claims until its budget is met.
const CLAIM_ENTRIES: i64 = 16;

/// Notifications committed together and not yet published, with the outbox
/// entry that stands for them (`None` when there are no rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unpublished {
    pub entry: Option<i64>,
    pub rows: Vec<Notification>,
}

/// The `notification_ids` text of an entry: ids joined by commas.
fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(",")
}

/// Reads `notification_ids` back; a part that is not a number is skipped.
fn parse_id_list(text: &str) -> Vec<i64> {
    text.split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

/// Adds an outbox entry for `ids` on one connection, inside the caller's
/// transaction; returns the entry's id.
pub(crate) trait AddEntry {
    async fn add_entry(self, ids: &[i64], due: DateTime<Utc>) -> Result<i64, sqlx::Error>;
}

const ADD_ENTRY: &str = "INSERT INTO herald_outbox (notification_ids, pending, attempts, \
     next_attempt_at) VALUES ($1, $2, 0, $3) RETURNING id";

impl AddEntry for &mut sqlx::SqliteConnection {
    async fn add_entry(self, ids: &[i64], due: DateTime<Utc>) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(ADD_ENTRY)
            .bind(id_list(ids))
            .bind(ids.len() as i32)
            .bind(super::sqlite_time(due))
            .fetch_one(self)
            .await
    }
}

impl AddEntry for &mut sqlx::PgConnection {
    async fn add_entry(self, ids: &[i64], due: DateTime<Utc>) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(ADD_ENTRY)
            .bind(id_list(ids))
            .bind(ids.len() as i32)
            .bind(due)
            .fetch_one(self)
            .await
    }
}

impl Store {
    /// Claims entries whose publish is due, earliest due first, with their
    /// notifications: whole entries, a few at a time, until `limit`
    /// notifications are in (so it may go over). A claimed entry is not due
    /// again until
    /// `lease` has passed, so several processes' retry passes never take
    /// the same entry; one that dies holding it leaves it to the next pass
    /// after the lease. A notification deleted since is left out.
    pub async fn outbox_due(
        &self,
        limit: usize,
        lease: chrono::TimeDelta,
    ) -> Result<Vec<Unpublished>, StoreError> {
        // PostgreSQL skips entries another transaction is claiming; SQLite
        // has one writer, so its claims never overlap.
        const CLAIM: &str = "UPDATE herald_outbox SET next_attempt_at = $1 WHERE id IN \
             (SELECT id FROM herald_outbox WHERE next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3 {lock}) RETURNING id, notification_ids";
        let now = now();
        let sql = match self.backend() {
            super::Backend::Postgres => CLAIM.replace("{lock}", "FOR UPDATE SKIP LOCKED"),
            super::Backend::Sqlite => CLAIM.replace("{lock}", ""),
        };
        let mut due = Vec::new();
        let mut ids = Vec::new();
        while ids.len() < limit.max(1) {
            let mut entries: Vec<(i64, String)> = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(db_time(now + lease))
                .bind(db_time(now))
                .bind(CLAIM_ENTRIES)
                .fetch_all(pool)
                .await?);
            if entries.is_empty() {
                break;
            }
            entries.sort_unstable_by_key(|(id, _)| *id);
            for (entry, list) in entries {
                let entry_ids = parse_id_list(&list);
                ids.extend_from_slice(&entry_ids);
                due.push((entry, entry_ids));
            }
        }
        let mut rows = self.notifications_by_ids(&ids).await?;
        Ok(due
            .into_iter()
            .map(|(entry, ids)| Unpublished {
                entry: Some(entry),
                rows: ids.iter().filter_map(|id| rows.remove(id)).collect(),
            })
            .collect())
    }

    /// Removes entries whose notifications were all published.
    pub async fn outbox_done(&self, entries: &[i64]) -> Result<(), StoreError> {
        for entries in entries.chunks(super::ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new("DELETE FROM herald_outbox WHERE id");
                push_id_list(&mut sql, entries);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Keeps only `failed` in `entry`, counts a failed attempt and sets when
    /// to try again.
    pub async fn outbox_retry_at(
        &self,
        entry: i64,
        failed: &[i64],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE herald_outbox SET notification_ids = $1, pending = $2, \
             attempts = attempts + 1, next_attempt_at = $3 WHERE id = $4";
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(id_list(failed))
                .bind(failed.len() as i32)
                .bind(db_time(at))
                .bind(entry)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// How many notifications wait to be published (a notification deleted
    /// before its entry went out still counts).
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT CAST(COALESCE(SUM(pending), 0) AS bigint) FROM herald_outbox";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL).fetch_one(pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_list_reads_back_as_written() {
        let ids = [7, 12, 9_007_199_254_740_993];
        assert_eq!(id_list(&ids), "7,12,9007199254740993");
        assert_eq!(parse_id_list(&id_list(&ids)), ids);
        assert_eq!(parse_id_list(""), Vec::<i64>::new());
        assert_eq!(parse_id_list("3, x,4"), [3, 4]);
    }
}
