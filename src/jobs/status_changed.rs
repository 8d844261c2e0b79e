//! `status_changed`: tell the task's assignee and creator, not the one who
//! changed it. Type `worker.notification_types.status_changed` (default
//! `status_changed`), title `Task Status Changed`, message
//! `Task "<title>" moved from <old> to <new>.` (plus ` Reason: <reason>`),
//! data `{task_id, old_status, new_status}`, plus `reason` when one is
//! given, as the application's own task writes it (its frontend shows it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::recipients;
use crate::store::{NewNotification, Task};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChanged {
    #[schemars(range(min = 1))]
    pub task_id: i64,
    pub old_status: String,
    pub new_status: String,
    /// The user who changed it; not notified.
    pub changed_by: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

impl StatusChanged {
    pub(super) fn notifications(
        &self,
        task: &Task,
        job_id: &str,
        kind: &str,
    ) -> Vec<NewNotification> {
        let mut message = format!(
            "Task \"{}\" moved from {} to {}.",
            task.title, self.old_status, self.new_status
        );
        let mut data = json!({"task_id": task.id, "old_status": self.old_status, "new_status": self.new_status});
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            message.push_str(&format!(" Reason: {reason}"));
            data["reason"] = reason.into();
        }
        recipients(task, self.changed_by)
            .into_iter()
            .map(|user_id| NewNotification {
                user_id,
                title: "Task Status Changed".into(),
                message: message.clone(),
                notification_type: kind.into(),
                data: data.clone(),
                // One per job: the same change can happen again later.
                dedup_key: Some(format!("status_changed:{job_id}")),
            })
            .collect()
    }
}
