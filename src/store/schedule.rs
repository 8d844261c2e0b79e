//! `herald_schedule_runs`: claims of scheduled periods, so that with several
//! worker processes each period's scan runs once.

use chrono::{DateTime, TimeDelta, Utc};

use super::{Store, StoreError, with_pool};

/// Claims older than this are deleted when a new period is claimed.
const KEEP_CLAIMS: TimeDelta = TimeDelta::days(7);

impl Store {
    /// True for the one caller that claims (name, period) first.
    pub async fn claim_period(
        &self,
        name: &str,
        period_start: DateTime<Utc>,
        claimed_by: &str,
    ) -> Result<bool, StoreError> {
        const CLAIM: &str = "INSERT INTO herald_schedule_runs (name, period_start, claimed_by) \
             VALUES ($1, $2, $3) ON CONFLICT (name, period_start) DO NOTHING";
        const PRUNE: &str =
            "DELETE FROM herald_schedule_runs WHERE name = $1 AND period_start < $2";
        with_pool!(self, pool => {
            let claimed = sqlx::query(CLAIM)
                .bind(name)
                .bind(db_time(period_start))
                .bind(claimed_by)
                .execute(pool)
                .await?
                .rows_affected()
                == 1;
            if claimed {
                sqlx::query(PRUNE)
                    .bind(name)
                    .bind(db_time(period_start - KEEP_CLAIMS))
                    .execute(pool)
                    .await?;
            }
            Ok(claimed)
        })
    }

    /// Who claimed (name, period), if anyone.
    pub async fn period_claimant(
        &self,
        name: &str,
        period_start: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str =
            "SELECT claimed_by FROM herald_schedule_runs WHERE name = $1 AND period_start = $2";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL)
            .bind(name)
            .bind(db_time(period_start))
            .fetch_optional(pool)
            .await?))
    }

    /// How many periods of `name` were claimed (for tests and metrics).
    pub async fn claimed_periods(&self, name: &str) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT count(*) FROM herald_schedule_runs WHERE name = $1";
        with_pool!(self, pool => Ok(sqlx::query_scalar(SQL).bind(name).fetch_one(pool).await?))
    }
}
