//! Scheduled scans with tokio-cron-scheduler. Each tick names its period
//! (the cron time it belongs to); the process that claims that period in the
//! database runs the scan, so several workers run each period once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler, JobSchedulerError};

pub use crate::jobs::schedule::{Schedule, parse_cron, period_of, schedules};
use crate::jobs::{JobContext, JobError};

/// Runs the period's scan if this process claims it. Returns whether it ran.
pub async fn tick(
    schedule: &Schedule,
    ctx: &JobContext,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<bool, JobError> {
    let Some(period) = period_of(&schedule.cron, now) else {
        return Ok(false);
    };
    // A paused kind's scans wait too (a database without the pause table
    // pauses nothing); the next period after resume runs.
    if ctx
        .store
        .is_kind_paused(schedule.job.kind())
        .await
        .unwrap_or(false)
    {
        tracing::info!(scan = schedule.name, %period, "scan kind paused; period skipped");
        return Ok(false);
    }
    if !ctx
        .store
        .claim_period(schedule.name, period, worker)
        .await?
    {
        return Ok(false);
    }
    let mut ctx = ctx.clone();
    ctx.job_id = format!("{}@{}", schedule.name, period.timestamp());
    metrics::counter!(crate::telemetry::metrics::SCANS_RUN, "scan" => schedule.name).increment(1);
    let outcome = schedule.job.run(&ctx).await?;
    if let Err(error) = ctx
        .store
        .finish_period(schedule.name, period, outcome.created)
        .await
    {
        tracing::warn!(scan = schedule.name, %error, "could not record the scan's result");
    }
    tracing::info!(scan = schedule.name, %period, created = outcome.created, "scheduled scan ran");
    Ok(true)
}

/// Starts tokio-cron-scheduler with every schedule; stop it with
/// `shutdown()` on the returned scheduler.
pub async fn start(
    schedules: Vec<Schedule>,
    ctx: JobContext,
    worker: String,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let worker: Arc<str> = worker.into();
    for schedule in schedules {
        let (ctx, worker, expression) = (ctx.clone(), worker.clone(), schedule.expression.clone());
        let schedule = Arc::new(schedule);
        let job = CronJob::new_async(expression.as_str(), move |_, _| {
            Box::pin(tick_logged(schedule.clone(), ctx.clone(), worker.clone()))
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// A tick from the scheduler: errors are logged, the next tick tries again.
async fn tick_logged(schedule: Arc<Schedule>, ctx: JobContext, worker: Arc<str>) {
    if let Err(error) = tick(&schedule, &ctx, &worker, Utc::now()).await {
        tracing::error!(scan = schedule.name, %error, "scheduled scan failed");
    }
}
