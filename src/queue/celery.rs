//! How a Celery task maps onto herald's ledger: its task id is the job's
//! dedup key, `celery:<task id>`, so a redelivered message is a no-op and
//! the worker knows which jobs report to Celery's result backend.

/// The dedup key prefix of the jobs the ingress records: `celery:<task id>`.
pub const DEDUP_PREFIX: &str = "celery:";

/// The dedup key of the job of Celery task `task_id`.
pub fn dedup_key(task_id: &str) -> String {
    format!("{DEDUP_PREFIX}{task_id}")
}

/// The Celery task id a dedup key names, if it is one the ingress made.
pub fn task_id_of(dedup_key: &str) -> Option<&str> {
    dedup_key.strip_prefix(DEDUP_PREFIX)
}
