//! Set-based scans over `tasks_task`: each is one INSERT ... SELECT with
//! conflict skipping that returns only the notifications it created, plus
//! their outbox entry in the same transaction. Never a loop over tasks.
//!
//! Once per task, offset and deadline: the dedup key carries the deadline as
//! epoch seconds, so moving a deadline arms the notices again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::outbox::{AddEntry, Unpublished};
use super::{
    Backend, Notification, OUTBOX_GRACE, Store, StoreError, notification_columns, with_pool,
    with_pool_retry_stale,
};

/// What differs between the two SQL dialects.
struct Dialect {
    epoch: &'static str,
    task_data: &'static str,
}

const SQLITE: Dialect = Dialect {
    epoch: "CAST(strftime('%s', t.deadline) AS INTEGER)",
    task_data: "json_object('task_id', t.id)",
};
const POSTGRES: Dialect = Dialect {
    epoch: "CAST(extract(epoch FROM t.deadline) AS bigint)",
    task_data: "jsonb_build_object('task_id', t.id)",
};

const RETURNING: &str = concat!(
    " ON CONFLICT (user_id, dedup_key) DO NOTHING RETURNING ",
    notification_columns!()
);

/// One deadline-reminder offset and the next smaller one: a task is reminded
/// for `offset` when its deadline is in (now + next_smaller, now + offset].
#[derive(Debug, Clone, Copy)]
pub struct ReminderWindow {
    pub offset: Duration,
    pub next_smaller: Duration,
}

impl Store {
    fn dialect(&self) -> &'static Dialect {
        match self.backend() {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }

    /// Overdue notices: every open task past its deadline with an assignee,
    /// once per task and deadline. Returns the notifications created now.
    pub async fn scan_overdue(
        &self,
        now: DateTime<Utc>,
        closed: &[String],
        kind: &str,
    ) -> Result<Unpublished, StoreError> {
        let d = self.dialect();
        let key = format!("'overdue:' || t.id || ':' || {}", d.epoch);
        let mut select = vec![
            Part::Sql(format!(
                "{INSERT} SELECT t.assignee_id, 'Task Overdue', \
                 'Task \"' || t.title || '\" is now overdue.', "
            )),
            Part::Text(kind.to_string()),
            Part::Sql(", false, ".into()),
            Part::Time(now),
            Part::Sql(format!(
                ", {data}, {key} FROM tasks_task t \
                 WHERE t.assignee_id IS NOT NULL AND t.deadline IS NOT NULL AND t.deadline < ",
                data = d.task_data,
            )),
            Part::Time(now),
            not_notified(&key),
        ];
        let mark = self.scan_mark(OVERDUE, now).await?;
        if let Some(since) = mark.since {
            select.extend([
                Part::Sql(" AND (t.deadline >= ".into()),
                Part::Time(since),
                Part::Sql(" OR t.updated_at >= ".into()),
                Part::Time(since),
                Part::Sql(")".into()),
            ]);
        }
        self.run_scan(select, now, closed, None, Some(mark)).await
    }

    /// Deadline reminders for one window, for every open task or one task.
    pub async fn scan_deadline_reminders(
        &self,
        now: DateTime<Utc>,
        window: ReminderWindow,
        closed: &[String],
        kind: &str,
        task_id: Option<i64>,
    ) -> Result<Unpublished, StoreError> {
        let d = self.dialect();
        let key = format!(
            "'reminder:' || t.id || ':{secs}:' || {epoch}",
            secs = window.offset.as_secs(),
            epoch = d.epoch
        );
        let select = vec![
            Part::Sql(format!(
                "{INSERT} SELECT t.assignee_id, 'Deadline Reminder', \
                 'Task \"' || t.title || '\" is due in less than {human}.', ",
                human = humanize(window.offset),
            )),
            Part::Text(kind.to_string()),
            Part::Sql(", false, ".into()),
            Part::Time(now),
            Part::Sql(format!(
                ", {data}, {key} FROM tasks_task t \
                 WHERE t.assignee_id IS NOT NULL AND t.deadline IS NOT NULL AND t.deadline > ",
                data = d.task_data,
            )),
            Part::Time(now + delta(window.next_smaller)),
            Part::Sql(" AND t.deadline <= ".into()),
            Part::Time(now + delta(window.offset)),
            not_notified(&key),
        ];
        self.run_scan(select, now, closed, task_id, None).await
    }

    /// Adds the closed-status and task filters, runs the insert and queues
    /// the new rows in the outbox, in one transaction.
    async fn run_scan(
        &self,
        select: Vec<Part>,
        now: DateTime<Utc>,
        closed: &[String],
        task_id: Option<i64>,
        mark: Option<ScanMark>,
    ) -> Result<Unpublished, StoreError> {
        let fallback_at = now + OUTBOX_GRACE;
        with_pool_retry_stale!(self, pool => {
            let mut sql = sqlx::QueryBuilder::new("");
            for part in &select {
                match part {
                    Part::Sql(text) => sql.push(text),
                    Part::Text(text) => sql.push_bind(text.clone()),
                    Part::Time(at) => sql.push_bind(db_time(*at)),
                };
            }
            if !closed.is_empty() {
                sql.push(" AND t.status NOT IN (");
                let mut list = sql.separated(", ");
                for status in closed {
                    list.push_bind(status.clone());
                }
                sql.push(")");
            }
            if let Some(id) = task_id {
                sql.push(" AND t.id = ").push_bind(id);
            }
            sql.push(RETURNING);
            let mut tx = pool.begin().await?;
            let rows: Vec<Notification> = sql.build_query_as().fetch_all(&mut *tx).await?;
            if let Some(mark) = &mark {
                sqlx::query(MARK)
                    .bind(mark.name)
                    .bind(db_time(now))
                    .bind(db_time(mark.full_at))
                    .execute(&mut *tx)
                    .await?;
            }
            let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
            let mut entry = None;
            if !ids.is_empty() {
                entry = Some((&mut *tx).add_entry(&ids, fallback_at).await?);
            }
            tx.commit().await?;
            Ok(Unpublished { entry, rows })
        })
    }
}

/// The overdue scan's name in `herald_scan_marks`.
const OVERDUE: &str = "overdue";

/// A full overdue pass runs at least this often; between them a pass reads
/// only tasks whose deadline passed or that changed since the last one.
const FULL_SCAN_EVERY: TimeDelta = TimeDelta::hours(1);

/// Margin under the last pass's time, for clocks a little apart between
/// worker processes and for rows committed while it ran.
const SCAN_OVERLAP: TimeDelta = TimeDelta::minutes(2);

const MARK: &str = "INSERT INTO herald_scan_marks (name, scanned_until, full_at) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
     SET scanned_until = excluded.scanned_until, full_at = excluded.full_at";

/// Where a scan starts: `since` is None for a full pass.
#[derive(Debug, Clone, Copy)]
struct ScanMark {
    name: &'static str,
    since: Option<DateTime<Utc>>,
    /// The last full pass, now when this is one.
    full_at: DateTime<Utc>,
}

impl Store {
    /// Reads the scan's mark: a full pass when none is recorded or the last
    /// full one is older than [`FULL_SCAN_EVERY`].
    async fn scan_mark(
        &self,
        name: &'static str,
        now: DateTime<Utc>,
    ) -> Result<ScanMark, StoreError> {
        const SQL: &str = "SELECT scanned_until, full_at FROM herald_scan_marks WHERE name = $1";
        let row: Option<(DateTime<Utc>, DateTime<Utc>)> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(name)
            .fetch_optional(pool)
            .await?);
        Ok(match row {
            Some((until, full_at)) if now - full_at < FULL_SCAN_EVERY => ScanMark {
                name,
                since: Some(until - SCAN_OVERLAP),
                full_at,
            },
            _ => ScanMark {
                name,
                since: None,
                full_at: now,
            },
        })
    }
}

/// Leaves out tasks already notified under `key` (the dedup key the row
/// would get): PostgreSQL takes an id from the sequence for every row an
/// INSERT ... SELECT produces, conflicting or not, so a conflict left to ON
/// CONFLICT would burn one per known overdue task and pass.
fn not_notified(key: &str) -> Part {
    Part::Sql(format!(
        " AND NOT EXISTS (SELECT 1 FROM notifications_notification n \
         WHERE n.user_id = t.assignee_id AND n.dedup_key = {key})"
    ))
}

/// A piece of a scan statement: SQL text, or a value bound as a parameter
/// (text, or a time in the backend's own time type).
enum Part {
    Sql(String),
    Text(String),
    Time(DateTime<Utc>),
}

const INSERT: &str = "INSERT INTO notifications_notification \
     (user_id, title, message, type, is_read, created_at, data, dedup_key)";

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// "24 hours", "1 hour", "30 minutes", "90 seconds".
pub fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = if secs.is_multiple_of(86_400) && secs >= 86_400 * 2 {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3600) && secs > 0 {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) && secs > 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}
