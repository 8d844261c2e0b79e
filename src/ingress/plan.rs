//! What to do with one decoded task message, whatever broker it came
//! from: the job to record (its kind by task name, its payload by Python's
//! binding of the call, `eta` and the Celery task id as dedup key), or the
//! result to write instead (unknown task, links, expired, bad arguments, a
//! beat period already run).

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;

use super::{DEDUP_PREFIX, Outcome, Refused, Shared, TaskMessage, dedup_key};
use crate::jobs::Job;
use crate::jobs::schedule::period_of;
use crate::queue::Submission;
use crate::queue::submit::MAX_DEDUP_KEY;

/// What one round does with each message it took.
pub(super) enum Plan {
    /// Record this job.
    Record(Box<Submission>),
    /// Write this result and record nothing (refused, expired, unknown, or a
    /// beat period already run).
    Answer(String, Outcome),
    /// Nothing to record or answer (unreadable, no task id).
    Drop,
}

impl Shared {
    /// What to do with one task message.
    pub(super) async fn plan(&self, task: TaskMessage) -> anyhow::Result<Plan> {
        let answer = |outcome| Ok(Plan::Answer(task.id.clone(), outcome));
        let Some(route) = self.routes.get(&task.task) else {
            tracing::warn!(
                task = task.task,
                id = task.id,
                "a Celery task herald does not know"
            );
            return answer(Outcome::not_registered(&task.task));
        };
        if task.linked {
            return answer(Outcome::builtin(
                "NotImplementedError",
                "herald does not run callbacks, errbacks, chains or chords \
                 (link, link_error, chain, chord): send this call to a Celery worker",
            ));
        }
        let now = Utc::now();
        if let Some(expires) = task.expires
            && (expires <= now || task.eta.is_some_and(|eta| eta >= expires))
        {
            return answer(Outcome::Revoked("expired".into()));
        }
        let payload = match route.payload(&task.task, &task.args, &task.kwargs) {
            Ok(payload) => payload,
            Err(error) => return answer(Outcome::builtin("TypeError", error.to_string())),
        };
        let key = dedup_key(&task.id);
        if key.chars().count() > MAX_DEDUP_KEY {
            let reason = format!(
                "task ids longer than {} characters are not supported",
                MAX_DEDUP_KEY - DEDUP_PREFIX.len()
            );
            return answer(Outcome::builtin("ValueError", reason));
        }
        // A payload that breaks the kind's schema is refused by the
        // submission, which names the field (see `submit`).
        if task.beat
            && let Ok(job) = crate::jobs::parse(route.kind, payload.clone())
            && let Some(outcome) = self.claim_beat_period(&job, &task.id).await?
        {
            return answer(outcome);
        }
        Ok(Plan::Record(Box::new(Submission {
            kind: route.kind.to_string(),
            payload,
            run_at: task.eta.map(whole_second_up),
            dedup_key: Some(key),
        })))
    }

    /// A `celery beat` message for a whole scan claims the scan's current
    /// period as herald's scheduler does: the first claimant runs it, any
    /// other gets a SUCCESS saying who ran it. `None`: this message runs it
    /// (also when it claimed the period before and is taken again).
    async fn claim_beat_period(&self, job: &Job, task_id: &str) -> anyhow::Result<Option<Outcome>> {
        let whole_scan = match job {
            Job::OverdueCheck(_) => true,
            Job::DeadlineReminder(reminder) => reminder.task_id.is_none(),
            _ => false,
        };
        let schedule = self.schedules.iter().find(|s| s.name == job.kind());
        let (true, Some(schedule)) = (whole_scan, schedule) else {
            return Ok(None);
        };
        let Some(period) = period_of(&schedule.cron, Utc::now()) else {
            return Ok(None);
        };
        let claimant = claimant(task_id);
        if self
            .store
            .claim_period(schedule.name, period, &claimant)
            .await?
        {
            return Ok(None);
        }
        let holder = self.store.period_claimant(schedule.name, period).await?;
        if holder.as_deref() == Some(claimant.as_str()) {
            return Ok(None);
        }
        tracing::info!(scan = schedule.name, %period, "a beat message for a period already run");
        Ok(Some(Outcome::Success(json!({
            "skipped": true,
            "period": period.to_rfc3339(),
            "ran_by": holder,
        }))))
    }
}

/// The result of a message herald refuses to run (when it names a task id).
pub(super) fn refusal(refused: Refused) -> Plan {
    tracing::warn!(id = ?refused.id, task = ?refused.task, reason = %refused.reason, "Celery message refused");
    match refused.id {
        Some(id) => Plan::Answer(id, Outcome::builtin(refused.exc_type, refused.reason)),
        None => Plan::Drop,
    }
}

/// The queues keep run times in whole seconds and run an entry once its
/// second has come: an `eta` rounded up to its next second is never run
/// before it.
fn whole_second_up(eta: DateTime<Utc>) -> DateTime<Utc> {
    let floor = eta.trunc_subsecs(0);
    if floor == eta {
        eta
    } else {
        floor + chrono::TimeDelta::seconds(1)
    }
}

/// `claimed_by` of a beat message's claim: `celery:<task id>`, cut to the
/// column's 64 bytes.
fn claimant(task_id: &str) -> String {
    let mut claimant = dedup_key(task_id);
    while claimant.len() > 64 {
        claimant.pop();
    }
    claimant
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::task_id_of;

    #[test]
    fn dedup_keys_name_their_task() {
        assert_eq!(dedup_key("abc"), "celery:abc");
        assert_eq!(task_id_of("celery:abc"), Some("abc"));
        assert_eq!(task_id_of("welcome"), None);
        assert_eq!(claimant(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn an_eta_rounds_up_to_its_second() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            whole_second_up(at("2030-01-01T00:00:04.001Z")),
            at("2030-01-01T00:00:05Z")
        );
        assert_eq!(
            whole_second_up(at("2030-01-01T00:00:04Z")),
            at("2030-01-01T00:00:04Z")
        );
    }
}
