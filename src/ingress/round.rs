//! One round of the ingress, whatever broker it takes from: plan each
//! message taken, record the jobs in the ledger in one statement (retrying
//! while it cannot be written), write the results of those refused, then
//! acknowledge the batch; and count what became of each message.

use tokio_util::sync::CancellationToken;

use super::broker::Held;
use super::plan::{Plan, refusal};
use super::{Outcome, Refused, Shared, TaskMessage, broker_backoff, pause, task_id_of};
use crate::queue::{Submission, submit_many};

impl Shared {
    /// One batch: plan each message, record the jobs (retrying while the
    /// ledger or the queue cannot be written), write the refusals' results,
    /// then acknowledge the batch. Stopped while retrying, the batch goes
    /// back to its queues instead.
    pub(super) async fn round(
        &self,
        messages: Vec<Result<TaskMessage, Refused>>,
        held: Held<'_>,
        stop: &CancellationToken,
    ) {
        let mut backoff = broker_backoff();
        loop {
            match self.record(&messages).await {
                Ok(()) => break,
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, backoff = ?wait, messages = held.count(), "could not record Celery messages; holding them");
                    // Still ours: no restore sweep takes them meanwhile.
                    let _ = held.keep().await;
                    if !pause(wait, stop).await {
                        match held.put_back().await {
                            Ok(n) => tracing::info!(messages = n, "held Celery messages put back"),
                            Err(error) => {
                                tracing::warn!(%error, "held Celery messages go back by restore")
                            }
                        }
                        return;
                    }
                }
            }
        }
        if let Err(error) = held.ack().await {
            // Recorded already: taken again, they find their jobs.
            tracing::warn!(%error, messages = held.count(), "could not acknowledge Celery messages");
        }
    }

    /// Plans and records one batch; an error leaves it all to do again.
    async fn record(&self, messages: &[Result<TaskMessage, Refused>]) -> anyhow::Result<()> {
        if let Some(results) = &self.results {
            results.remember(messages).await?;
        }
        // A revoke may have come before its message: one look for the batch.
        let ids: Vec<String> = messages
            .iter()
            .filter_map(|message| message.as_ref().ok().map(|task| task.id.clone()))
            .collect();
        let revoked = self.store.revoked_among(&ids).await?;
        let mut plans = Vec::with_capacity(messages.len());
        for message in messages {
            let plan = match message {
                Ok(task) if revoked.contains(&task.id) => {
                    Plan::Answer(task.id.clone(), Outcome::Revoked("revoked".into()))
                }
                Ok(task) => self.plan(task.clone()).await?,
                Err(refused) => refusal(refused.clone()),
            };
            plans.push(plan);
        }
        let mut submissions = Vec::new();
        let mut answers = Vec::new();
        let mut received = Vec::new();
        for (plan, message) in plans.into_iter().zip(messages) {
            match plan {
                Plan::Record(submission) => {
                    submissions.push(*submission);
                    received.extend(message.as_ref().ok());
                }
                Plan::Answer(id, outcome) => answers.push((id, outcome)),
                Plan::Drop => {}
            }
        }
        // Marked before the jobs exist: a job never ends before its mark.
        let ignored: Vec<String> = messages
            .iter()
            .filter_map(|message| message.as_ref().ok())
            .filter(|task| task.ignore_result)
            .map(|task| task.id.clone())
            .collect();
        if self.results.is_some() && !ignored.is_empty() {
            self.store.ignore_results(&ignored).await?;
        }
        self.submit(&mut submissions, &mut answers).await?;
        if let Some(results) = &self.results {
            // Celery stores no error of a task that ignores its result.
            let answered: Vec<(String, Outcome)> = answers
                .iter()
                .filter(|(id, _)| !ignored.contains(id))
                .cloned()
                .collect();
            results.store(&answered).await?;
        }
        // Celery's events for Flower, once it is all recorded.
        for task in received {
            super::control::events::received(task);
        }
        for (id, outcome) in &answers {
            super::control::events::ended(id, outcome, None);
        }
        count(&answers, submissions.len());
        Ok(())
    }

    /// Records `submissions` in one ledger statement (a message taken
    /// again finds its job by the dedup key and records nothing; a job
    /// recorded by a process that died before queueing it is queued by the
    /// worker's requeue pass). One that the submission path refuses (a
    /// payload that breaks its kind's schema) moves to `answers` as a
    /// FAILURE naming the field, and the rest are submitted again (the check
    /// runs before anything is written).
    async fn submit(
        &self,
        submissions: &mut Vec<Submission>,
        answers: &mut Vec<(String, Outcome)>,
    ) -> anyhow::Result<()> {
        while !submissions.is_empty() {
            match submit_many(&self.store, &self.queue, submissions.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) => match error.at {
                    Some(i) if i < submissions.len() => {
                        let refused = submissions.remove(i);
                        let key = refused.dedup_key.unwrap_or_default();
                        let id = task_id_of(&key).unwrap_or_default().to_string();
                        answers.push((id, Outcome::builtin("ValueError", error.error.to_string())));
                    }
                    _ => return Err(anyhow::anyhow!(error)),
                },
            }
        }
        Ok(())
    }
}

/// Counts a round's messages by what became of them.
fn count(answers: &[(String, Outcome)], recorded: usize) {
    use crate::telemetry::metrics::CELERY_MESSAGES;
    metrics::counter!(CELERY_MESSAGES, "outcome" => "recorded").increment(recorded as u64);
    for (_, outcome) in answers {
        let outcome = match outcome {
            Outcome::Success(_) => "skipped",
            Outcome::Failure { .. } => "refused",
            Outcome::Revoked(_) => "revoked",
            Outcome::Started(_) => "started",
        };
        metrics::counter!(CELERY_MESSAGES, "outcome" => outcome).increment(1);
    }
}
