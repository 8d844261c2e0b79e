//! The reply queues of Celery's rpc:// result backend (`herald_celery_replies`):
//! a Celery caller names in each task message (`reply_to`) the queue its
//! `AsyncResult.get()` listens on, and the task's end must go there however
//! long the job waits. The ingress remembers the address when it records the
//! message; the result writer looks it up, publishes, and forgets it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{ID_CHUNK, Store, StoreError, now, push_id_list, with_pool};

impl Store {
    /// Remembers each `(task id, reply queue)`; a task id seen again keeps
    /// its first address (a message taken twice names the same one).
    pub async fn remember_replies(&self, replies: &[(String, String)]) -> Result<(), StoreError> {
        let at = now();
        for chunk in replies.chunks(ID_CHUNK / 2) {
            with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "INSERT INTO herald_celery_replies (task_id, reply_to, recorded_at) ",
                );
                sql.push_values(chunk, |mut row, (task_id, reply_to)| {
                    row.push_bind(task_id).push_bind(reply_to).push_bind(db_time(at));
                });
                sql.push(" ON CONFLICT (task_id) DO NOTHING");
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// The reply queue of each of `task_ids` that has one.
    pub async fn replies_for(
        &self,
        task_ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut found = HashMap::new();
        for ids in task_ids.chunks(ID_CHUNK) {
            let rows: Vec<(String, String)> = with_pool!(self, pool => {
                let mut sql = sqlx::QueryBuilder::new(
                    "SELECT task_id, reply_to FROM herald_celery_replies WHERE task_id",
                );
                push_id_list(&mut sql, ids);
                sql.build_query_as().persistent(false).fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Forgets the reply queues of `task_ids` (their results went out).
    pub async fn forget_replies(&self, task_ids: &[String]) -> Result<(), StoreError> {
        for ids in task_ids.chunks(ID_CHUNK) {
            with_pool!(self, pool => {
                let mut sql =
                    sqlx::QueryBuilder::new("DELETE FROM herald_celery_replies WHERE task_id");
                push_id_list(&mut sql, ids);
                sql.build().persistent(false).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Forgets the addresses recorded before `before` whose results will
    /// never go out: their task has no job that may still run (queued,
    /// retrying, or dead and so retryable). Returns how many.
    pub async fn forget_replies_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const FORGET: &str = "DELETE FROM herald_celery_replies WHERE recorded_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM herald_jobs j \
             WHERE j.dedup_key = 'celery:' || herald_celery_replies.task_id \
             AND j.state IN ('queued', 'retrying', 'dead'))";
        let done = with_pool!(self, pool => {
            sqlx::query(FORGET).bind(db_time(before)).execute(pool).await?.rows_affected()
        });
        Ok(done)
    }
}
