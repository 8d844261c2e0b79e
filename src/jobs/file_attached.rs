//! `file_attached`: tell the task's assignee and creator, not the uploader.
//! Type `worker.notification_types.file_attached` (default
//! `file_attached`), title `File Attached`, message
//! `"<file_name>" was attached to task "<title>".`, data `{task_id, file_id}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::recipients;
use crate::store::{NewNotification, Task};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAttached {
    #[schemars(range(min = 1))]
    pub task_id: i64,
    pub file_id: i64,
    pub file_name: String,
    /// The user who attached it; not notified.
    pub uploaded_by: i64,
}

impl FileAttached {
    pub(super) fn notifications(&self, task: &Task, kind: &str) -> Vec<NewNotification> {
        recipients(task, self.uploaded_by)
            .into_iter()
            .map(|user_id| NewNotification {
                user_id,
                title: "File Attached".into(),
                message: format!(
                    "\"{}\" was attached to task \"{}\".",
                    self.file_name, task.title
                ),
                notification_type: kind.into(),
                data: json!({"task_id": task.id, "file_id": self.file_id}),
                dedup_key: Some(format!("file_attached:{}", self.file_id)),
            })
            .collect()
    }
}
