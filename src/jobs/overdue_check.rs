//! `overdue_check`: one set-based scan; every open task past its deadline
//! gets the contract's notice once per deadline: type
//! `worker.notification_types.overdue` (default `overdue`), title
//! `Task Overdue`, message `Task "<title>" is now overdue.`, data `{task_id}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{JobContext, JobError};
use crate::store::Unpublished;

/// No payload: `{}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverdueCheck {}

impl OverdueCheck {
    pub(super) async fn scan(&self, ctx: &JobContext) -> Result<Vec<Unpublished>, JobError> {
        let scanned = ctx
            .store
            .scan_overdue(
                crate::store::now(),
                &ctx.closed_statuses,
                &ctx.notification_types.overdue,
            )
            .await?;
        Ok(vec![scanned])
    }
}
