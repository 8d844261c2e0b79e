//! What the CLI subcommands do, kept out of `main.rs` so tests can call them.

use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::queue::MAX_BATCH;

/// `herald migrate`: applies pending migrations and says what it did.
pub async fn migrate(settings: &Settings) -> anyhow::Result<String> {
    let store = crate::connect::store(settings).await?;
    let applied = store.migrate().await.context("migration failed")?;
    store.close().await;
    let backend = format!("{:?}", store.backend()).to_lowercase();
    Ok(match applied.len() {
        0 => format!("{backend}: nothing to apply, the database is up to date"),
        n => format!("{backend}: applied {n} migration(s): {applied:?}"),
    })
}

/// `herald token`: an access token for `user_id` signed with the configured
/// (or generated) secret.
pub fn token(settings: &Settings, user_id: i64, ttl: Option<Duration>) -> anyhow::Result<String> {
    let secret = settings.secret()?;
    let ttl = ttl.unwrap_or(settings.tokens.access_ttl);
    Ok(crate::tokens::mint(&secret, user_id, ttl)?)
}

/// `herald enqueue`: validates, records and queues one job; prints
/// `{"id", "state", "existing"}`.
pub async fn enqueue(
    settings: &Settings,
    submission: crate::queue::Submission,
) -> anyhow::Result<String> {
    let store = crate::connect::store(settings).await?;
    let queue = crate::connect::queue(settings).await?;
    let submitted = crate::queue::submit(&store, &queue, submission).await;
    queue.close().await;
    store.close().await;
    Ok(answer_line(&submitted?))
}

/// `herald enqueue --file`: checks every job first (bad input anywhere
/// queues nothing; the error names the job's index), then records and
/// queues them [`MAX_BATCH`] at a time; prints one `{"id", "state",
/// "existing"}` line per job. A database or queue failure keeps the
/// batches queued before it, and says how many jobs they held.
pub async fn enqueue_many(
    settings: &Settings,
    submissions: Vec<crate::queue::Submission>,
) -> anyhow::Result<String> {
    let store = crate::connect::store(settings).await?;
    let limits = store.column_limits().await?;
    crate::queue::check_all(&submissions, &limits)?;
    let queue = crate::connect::queue(settings).await?;
    let mut lines = Vec::with_capacity(submissions.len());
    let mut failure = None;
    for chunk in submissions.chunks(MAX_BATCH) {
        match crate::queue::submit_many(&store, &queue, chunk.to_vec()).await {
            Ok(done) => lines.extend(done.iter().map(answer_line)),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    queue.close().await;
    store.close().await;
    match failure {
        None => Ok(lines.join("\n")),
        Some(error) => Err(anyhow::Error::new(error).context(format!(
            "{} job(s) were queued before the failure",
            lines.len()
        ))),
    }
}

fn answer_line(done: &crate::queue::Submitted) -> String {
    serde_json::json!({"id": done.id, "state": done.state, "existing": done.existing}).to_string()
}

/// `herald jobs failed`: the dead jobs, newest first, one JSON object per
/// line (id, kind, attempts, last error, ...).
pub async fn jobs_failed(settings: &Settings, limit: i64) -> anyhow::Result<String> {
    let store = crate::connect::store(settings).await?;
    let dead = store
        .jobs_in_state(crate::store::JobState::Dead, limit)
        .await;
    store.close().await;
    let lines: Vec<String> = dead?
        .iter()
        .map(|job| serde_json::to_string(job).unwrap_or_default())
        .collect();
    Ok(lines.join("\n"))
}

/// `herald jobs retry ID`: queues a dead job again.
pub async fn jobs_retry(settings: &Settings, id: &str) -> anyhow::Result<String> {
    let store = crate::connect::store(settings).await?;
    let queue = crate::connect::queue(settings).await?;
    let retried = crate::queue::retry_dead(&store, &queue, id).await;
    queue.close().await;
    store.close().await;
    retried?;
    Ok(format!("job {id} queued again"))
}
