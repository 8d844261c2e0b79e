//! The Celery drop-in: task messages the application's unchanged `.delay()`
//! and `apply_async()` calls put on Celery's Redis broker are taken off
//! herald's queues (`celery.queues`), recorded in herald's ledger as the job
//! kinds their task names map to (`celery.tasks`), and only then
//! acknowledged. The worker runs them like any job and writes each one's
//! end to Celery's result backend, so `AsyncResult.get()` works unchanged.
//!
//! Nothing lost: a message stays in kombu's `unacked` bookkeeping until its
//! job is in the ledger, and a restore sweep puts back what a dead process
//! held. Nothing run twice: the Celery task id is the job's dedup key
//! (`celery:<id>`), so a message taken again records nothing new.

pub mod broker;
pub mod message;
pub mod result;
pub mod route;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use broker::{Broker, Swept, Taken};
pub use message::{Refused, TaskMessage};
pub use result::{Outcome, ResultBackend};
pub use route::Routes;

use crate::config::{CelerySettings, ConfigError, Settings};
use crate::jobs::Job;
use crate::jobs::schedule::{Schedule, period_of, schedules};
pub use crate::queue::celery::{DEDUP_PREFIX, dedup_key, task_id_of};
use crate::queue::submit::MAX_DEDUP_KEY;
use crate::queue::{JobQueue, MAX_BATCH, Submission, submit_many};
use crate::retry::Backoff;
use crate::store::Store;

/// Checks `[celery]`: the check `startup` runs at load.
pub fn check_settings(settings: &CelerySettings) -> Result<(), ConfigError> {
    use secrecy::ExposeSecret;
    for (key, url, enabled) in [
        (
            "celery.broker_url",
            &settings.broker_url,
            settings.enabled(),
        ),
        (
            "celery.result_backend",
            &settings.result_backend,
            settings.results_enabled(),
        ),
    ] {
        // The URL may hold a password: the reason never repeats it.
        let url = url.expose_secret().trim();
        let redis = ["redis://", "rediss://", "unix://", "redis+unix://"];
        if enabled
            && (!redis.iter().any(|s| url.starts_with(s)) || redis::Client::open(url).is_err())
        {
            return Err(ConfigError::new(
                key,
                "herald reads Celery's Redis transport only: expected a redis://, rediss:// or unix:// URL",
            ));
        }
    }
    if settings.queues.is_empty() || settings.queues.iter().any(|q| q.is_empty()) {
        return Err(ConfigError::new(
            "celery.queues",
            "needs at least one queue name, none empty",
        ));
    }
    if settings.batch_size == 0 || settings.batch_size > MAX_BATCH {
        let reason = format!("must be 1 to {MAX_BATCH}");
        return Err(ConfigError::new("celery.batch_size", reason));
    }
    if settings.concurrency == 0 {
        return Err(ConfigError::new(
            "celery.concurrency",
            "must be greater than 0",
        ));
    }
    for (key, value) in [
        ("celery.poll_interval", settings.poll_interval),
        ("celery.visibility_timeout", settings.visibility_timeout),
        ("celery.restore_after", settings.restore_after),
    ] {
        if value.is_zero() {
            return Err(ConfigError::new(key, "must be greater than 0"));
        }
    }
    if settings.priority_steps.is_empty() || settings.priority_steps.iter().any(|s| *s > 9) {
        return Err(ConfigError::new(
            "celery.priority_steps",
            "needs steps from 0 to 9, at least one",
        ));
    }
    Routes::new(settings).map(drop)
}

/// The result backend the worker writes to, when one is configured.
pub fn result_backend(settings: &CelerySettings) -> Result<Option<ResultBackend>, ConfigError> {
    if !settings.results_enabled() {
        return Ok(None);
    }
    ResultBackend::new(&settings.result_backend, settings.result_expires)
        .map(Some)
        .map_err(|_| ConfigError::new("celery.result_backend", "not a Redis URL"))
}

/// What one round does with each message it took.
enum Plan {
    /// Record this job.
    Record(Box<Submission>),
    /// Write this result and record nothing (refused, expired, unknown, or a
    /// beat period already run).
    Answer(String, Outcome),
    /// Nothing to record or answer (unreadable, no task id).
    Drop,
}

/// What the loops share.
struct Shared {
    broker: Broker,
    store: Store,
    queue: JobQueue,
    routes: Routes,
    results: Option<ResultBackend>,
    settings: CelerySettings,
    /// Herald's own scan schedules: a beat message for a scan claims the
    /// scan's period, so each period runs once whoever sends it.
    schedules: Vec<Schedule>,
}

/// A running ingress; [`Ingress::shutdown`] stops it.
pub struct Ingress {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Ingress {
    /// Starts `celery.concurrency` loops and the restore sweep when a broker
    /// is configured; `None` when none is.
    pub async fn start(
        settings: &Settings,
        store: Store,
        queue: JobQueue,
    ) -> anyhow::Result<Option<Ingress>> {
        let celery = &settings.celery;
        if !celery.enabled() {
            return Ok(None);
        }
        let broker = Broker::connect(celery).await.map_err(|e| {
            anyhow::anyhow!("could not reach Celery's broker (celery.broker_url): {e}")
        })?;
        let shared = Arc::new(Shared {
            broker,
            store,
            queue,
            routes: Routes::new(celery)?,
            results: result_backend(celery)?,
            settings: celery.clone(),
            schedules: schedules(&settings.worker).map_err(anyhow::Error::msg)?,
        });
        let stop = CancellationToken::new();
        let mut tasks: Vec<JoinHandle<()>> = (0..celery.concurrency)
            .map(|i| tokio::spawn(consume(shared.clone(), i, stop.clone())))
            .collect();
        tasks.push(tokio::spawn(sweep(shared.clone(), stop.clone())));
        tracing::info!(queues = ?celery.queues, loops = celery.concurrency, "Celery ingress started");
        Ok(Some(Ingress { stop, tasks }))
    }

    /// Stops taking messages; a round under way finishes (its messages are
    /// recorded and acknowledged, or put back) within `timeout`. Past it,
    /// what the loops still hold goes back by the next restore sweep.
    pub async fn shutdown(self, timeout: Duration) {
        self.stop.cancel();
        let mut tasks = self.tasks;
        let ended = tokio::time::timeout(timeout, async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
        })
        .await;
        if ended.is_err() {
            for task in &tasks {
                task.abort();
            }
            tracing::warn!(
                "Celery ingress stopped past its deadline; held messages go back by restore"
            );
        } else {
            tracing::info!("Celery ingress stopped");
        }
    }
}

/// Sleeps `period`, or less when `stop` comes; false then.
async fn pause(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        () = stop.cancelled() => false,
    }
}

/// The wait after a failed take or record: 200 ms doubling up to 5 s,
/// from the start again after a success.
fn broker_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// One take-record-acknowledge loop, starting its round robin at queue
/// `first`; until `stop`.
async fn consume(shared: Arc<Shared>, first: usize, stop: CancellationToken) {
    let settings = &shared.settings;
    let mut turn = first;
    let mut backoff = broker_backoff();
    while !stop.is_cancelled() {
        let taken = match shared.broker.take(settings.batch_size, turn).await {
            Ok(taken) => taken,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, "could not take Celery messages; trying again");
                if !pause(wait, &stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        turn = turn.wrapping_add(1);
        if taken.is_empty() {
            if !pause(settings.poll_interval, &stop).await {
                return;
            }
            continue;
        }
        shared.round(taken, &stop).await;
    }
}

impl Shared {
    /// One batch: plan each message, record the jobs (retrying while the
    /// ledger or the queue cannot be written), write the refusals' results,
    /// then acknowledge the batch. Stopped while retrying, the batch goes
    /// back to its queues instead.
    async fn round(&self, taken: Vec<Taken>, stop: &CancellationToken) {
        let tags: Vec<&str> = taken.iter().filter_map(|t| t.tag.as_deref()).collect();
        let unreadable = taken.len() - tags.len();
        if unreadable > 0 {
            let list = self.broker.keys.rejected();
            tracing::error!(
                messages = unreadable,
                list,
                "unreadable Celery messages set aside"
            );
        }
        let mut backoff = broker_backoff();
        loop {
            match self.record(&taken).await {
                Ok(()) => break,
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, backoff = ?wait, messages = tags.len(), "could not record Celery messages; holding them");
                    // Still ours: no restore sweep takes them meanwhile.
                    let _ = self.broker.touch(&tags).await;
                    if !pause(wait, stop).await {
                        match self.broker.restore(&tags).await {
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
        if let Err(error) = self.broker.ack(&tags).await {
            // Recorded already: taken again, they find their jobs.
            tracing::warn!(%error, messages = tags.len(), "could not acknowledge Celery messages");
        }
    }

    /// Plans and records one batch; an error leaves it all to do again.
    async fn record(&self, taken: &[Taken]) -> anyhow::Result<()> {
        let mut plans = Vec::with_capacity(taken.len());
        for message in taken.iter().filter(|t| t.tag.is_some()) {
            let plan = match message::decode(&message.raw) {
                Ok(task) => self.plan(task).await?,
                Err(refused) => refusal(refused),
            };
            plans.push(plan);
        }
        let mut submissions = Vec::new();
        let mut answers = Vec::new();
        for plan in plans {
            match plan {
                Plan::Record(submission) => submissions.push(*submission),
                Plan::Answer(id, outcome) => answers.push((id, outcome)),
                Plan::Drop => {}
            }
        }
        self.submit(&mut submissions, &mut answers).await?;
        if let Some(results) = &self.results {
            results.store(&answers).await?;
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

    /// What to do with one task message.
    async fn plan(&self, task: TaskMessage) -> anyhow::Result<Plan> {
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
fn refusal(refused: Refused) -> Plan {
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

/// Counts a round's messages by what became of them.
fn count(answers: &[(String, Outcome)], recorded: usize) {
    use crate::telemetry::metrics::CELERY_MESSAGES;
    metrics::counter!(CELERY_MESSAGES, "outcome" => "recorded").increment(recorded as u64);
    for (_, outcome) in answers {
        let outcome = match outcome {
            Outcome::Success(_) => "skipped",
            Outcome::Failure { .. } => "refused",
            Outcome::Revoked(_) => "revoked",
        };
        metrics::counter!(CELERY_MESSAGES, "outcome" => outcome).increment(1);
    }
}

/// The restore sweep: at start, then every half `restore_after` (at most
/// every 10 s), until `stop`.
async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    let settings = &shared.settings;
    let every =
        (settings.restore_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match shared
            .broker
            .sweep(settings.restore_after, settings.visibility_timeout)
            .await
        {
            Ok(Swept { restored: 0, .. }) => {}
            Ok(swept) => tracing::info!(
                restored = swept.restored,
                "unacknowledged Celery messages put back"
            ),
            Err(error) => tracing::warn!(%error, "Celery restore sweep failed"),
        }
        if !pause(every, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_default_settings_are_valid_and_off() {
        let settings = Settings::defaults().celery;
        check_settings(&settings).unwrap();
        assert!(!settings.enabled() && !settings.results_enabled());
        assert_eq!(settings.queues, ["herald"]);
        let routes = Routes::new(&settings).unwrap();
        assert_eq!(
            routes.get("apps.tasks.tasks.file_attached").unwrap().kind,
            "file_attached"
        );
    }

    #[test]
    fn broker_urls_other_than_redis_are_refused_without_repeating_them() {
        let mut settings = Settings::defaults().celery;
        settings.broker_url = "amqp://guest:s3cret@rabbit//".to_string().into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "celery.broker_url");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        settings.broker_url = "redis://:s3cret@127.0.0.1:6379/3".to_string().into();
        check_settings(&settings).unwrap();
        settings.batch_size = 0;
        assert_eq!(
            check_settings(&settings).unwrap_err().key,
            "celery.batch_size"
        );
    }
}
