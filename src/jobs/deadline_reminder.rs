//! `deadline_reminder`: remind assignees before deadlines, at the configured
//! offsets (default 24 h and 1 h), once per task, offset and deadline.
//! Type `worker.notification_types.deadline_reminder` (default
//! `deadline_reminder`), title `Deadline Reminder`, message
//! `Task "<title>" is due in less than <offset>.`, data `{task_id}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{JobContext, JobError};
use crate::store::Unpublished;

/// `{}` scans every open task; `{"task_id": N}` only that one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadlineReminder {
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub task_id: Option<i64>,
}

impl DeadlineReminder {
    /// One statement per offset window, largest offset first.
    pub(super) async fn scan(&self, ctx: &JobContext) -> Result<Vec<Unpublished>, JobError> {
        let now = crate::store::now();
        let mut scanned = Vec::new();
        for window in ctx.reminder_windows() {
            let group = ctx
                .store
                .scan_deadline_reminders(
                    now,
                    window,
                    &ctx.closed_statuses,
                    &ctx.notification_types.deadline_reminder,
                    self.task_id,
                )
                .await?;
            scanned.push(group);
        }
        Ok(scanned)
    }
}
