//! `notify`: the app server's generic path: create and deliver one
//! notification as given.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::NewNotification;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The user's id (1 up to what the user id column holds).
    #[schemars(range(min = 1))]
    pub user_id: i64,
    /// At most the title column's size (Django's default: 255).
    #[schemars(length(max = 255))]
    pub title: String,
    pub message: String,
    /// The application's `Notification.Type` choice (the column holds 50).
    #[schemars(length(min = 1, max = 50))]
    pub notification_type: String,
    /// Extra data for client routing; `{}` when absent.
    #[serde(default)]
    pub data: Option<Value>,
    /// At most one notification per (user, dedup_key); defaults to one per job.
    #[serde(default)]
    #[schemars(length(min = 1, max = 255))]
    pub dedup_key: Option<String>,
}

impl Notify {
    pub(super) fn notification(&self, job_id: &str) -> NewNotification {
        NewNotification {
            user_id: self.user_id,
            title: self.title.clone(),
            message: self.message.clone(),
            notification_type: self.notification_type.clone(),
            data: self
                .data
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            dedup_key: Some(
                self.dedup_key
                    .clone()
                    .unwrap_or_else(|| format!("notify:{job_id}")),
            ),
        }
    }
}
