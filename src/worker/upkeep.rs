//! The worker's upkeep, each a loop running a pass every period until
//! shutdown: moving due entries of a Redis queue to its active list, queueing
//! what the ledger holds but no queue took, pruning what ended, and the
//! queue-depth gauge.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::JobQueue;
use crate::queue::redis::promote_due;
use crate::store::{JobState, Store};
use crate::telemetry::metrics as m;

/// Runs `pass` now and then every `period` until `stop`; a pass under way
/// when `stop` comes is dropped, so none holds up shutdown.
pub(super) async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = pass() => {}
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Moves due entries of a Redis queue to its active list every `period`
/// (see [`promote_due`]).
pub(super) async fn promote_loop(
    conn: redis::aio::ConnectionManager,
    config: apalis_redis::Config,
    period: Duration,
    stop: CancellationToken,
) {
    every(period, stop, || {
        let (mut conn, config) = (conn.clone(), config.clone());
        async move {
            if let Err(error) = promote_due(&mut conn, &config).await {
                tracing::debug!(%error, "could not promote due queue entries");
            }
        }
    })
    .await
}

/// Every minute, deletes the done jobs older than `keep` from the ledger
/// and the queue, queues again the jobs whose entries apalis gave up on
/// (several processes may do both: deleting twice is harmless, and the
/// effects of a job queued twice happen once), and forgets the rpc reply
/// queues that no job will answer.
pub(super) async fn prune_done(
    store: Store,
    queue: JobQueue,
    keep: Duration,
    stop: CancellationToken,
) {
    every(Duration::from_secs(60), stop, || async {
        let before = crate::queue::maintenance::ended_before(keep);
        match store.prune_done_jobs(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "done jobs deleted from the ledger"),
            Err(error) => tracing::warn!(%error, "could not prune the job ledger"),
        }
        match queue.prune_finished(keep).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "finished entries deleted from the queue"),
            Err(error) => tracing::warn!(%error, "could not prune the queue"),
        }
        if let Err(error) = super::revive_given_up(&store, &queue).await {
            tracing::warn!(%error, "could not queue again the entries apalis gave up on");
        }
        match store.forget_replies_before(before).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "rpc reply queues of ended tasks forgotten"),
            Err(error) => tracing::warn!(%error, "could not prune the rpc reply queues"),
        }
        if let Err(error) = store.forget_ignored_before(before).await {
            tracing::warn!(%error, "could not prune the ignore_result marks");
        }
        if let Err(error) = store.forget_revoked_before(crate::store::now()).await {
            tracing::warn!(%error, "could not prune the expired Celery revokes");
        }
    })
    .await
}

/// Every few seconds, queues the jobs the ledger holds but no queue took
/// (see [`crate::queue::requeue_unqueued`]).
pub(super) async fn requeue_loop(store: Store, queue: JobQueue, stop: CancellationToken) {
    every(Duration::from_secs(2), stop, || async {
        match crate::queue::requeue_unqueued(&store, &queue).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "recorded jobs queued again"),
            Err(error) => tracing::debug!(%error, "could not queue the unqueued jobs yet"),
        }
    })
    .await
}

/// Keeps `herald_queue_depth` current from the ledger.
pub(super) async fn depth_gauge(store: Store, stop: CancellationToken) {
    every(Duration::from_secs(5), stop, || async {
        for state in [JobState::Queued, JobState::Retrying] {
            if let Ok(count) = store.count_jobs(state).await {
                metrics::gauge!(m::QUEUE_DEPTH, "state" => state.as_str()).set(count as f64);
            }
        }
    })
    .await
}
