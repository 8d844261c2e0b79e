//! Celery tasks sent with `ignore_result` (`herald_celery_ignore_result`):
//! the ingress marks them when it records their jobs, and the worker writes
//! no result for a marked task when its job ends, as a Celery worker stores
//! none. A mark outlives its job only until the done jobs are pruned.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{ID_CHUNK, Store, StoreError, now, push_id_list, with_pool};

impl Store {
    /// Marks `task_ids` as wanting no result.
    pub async fn ignore_results(&self, task_ids: &[String]) -> Result<(), StoreError> {
        let at = now();
        for chunk in task_ids.chunks(ID_CHUNK / 2) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "INSERT INTO herald_celery_ignore_result (task_id, recorded_at) ",
                );
                sql.push_values(chunk, |mut row, task_id| {
                    row.push_bind(task_id).push_bind(db_time(at));
                });
                sql.push(" ON CONFLICT (task_id) DO NOTHING");
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Which of `task_ids` want no result.
    pub async fn ignoring_results(
        &self,
        task_ids: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        for ids in task_ids.chunks(ID_CHUNK) {
            let rows: Vec<String> = with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "SELECT task_id FROM herald_celery_ignore_result WHERE task_id",
                );
                push_id_list(&mut sql, ids);
                sql.build_query_scalar().persistent(false).fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Forgets the marks recorded before `before` whose jobs no longer may
    /// run (not queued, retrying or dead); how many.
    pub async fn forget_ignored_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const FORGET: &str = "DELETE FROM herald_celery_ignore_result WHERE recorded_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM herald_jobs j \
             WHERE j.dedup_key = 'celery:' || herald_celery_ignore_result.task_id \
             AND j.state IN ('queued', 'retrying', 'dead'))";
        let done = with_pool!(self, pool => {
            sqlx::query(FORGET).bind(db_time(before)).execute(pool).await?.rows_affected()
        });
        Ok(done)
    }
}
