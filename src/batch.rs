//! Natural batching (group commit): each caller hands in its one item and
//! waits for that item's answer; a collector takes whatever has arrived by
//! the time a batch slot is free (up to `max`) as one batch. Batches grow
//! with the load, and a lone item waits for nothing. The worker's event jobs
//! and the API's single submissions go through it: one batch costs a few
//! statements and commits instead of a few per item.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// A request and where its answer goes.
type Pending<T, R> = (T, oneshot::Sender<R>);

/// Hands items to a batch function and their answers back to the callers.
pub struct Batcher<T, R> {
    sender: mpsc::UnboundedSender<Pending<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the collector: at most `parallel` batches run at once, each of
    /// at most `max` items; `run` answers a batch in its order.
    pub fn spawn<F, Fut>(max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Pending<T, R>>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                // While every slot is busy, more items arrive and join.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max.max(1) {
                    match receiver.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    let answers = run(items).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                    drop(slot);
                });
            }
        });
        Batcher { sender }
    }

    /// Runs `item` in the next batch; `None` if its batch never answered
    /// (the batch task panicked or the runtime is shutting down).
    pub async fn call(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((item, reply)).ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_each_caller_and_batches_what_waits() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::spawn(8, 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|n| n * 10).collect()
            }
        }));
        let calls: Vec<_> = (0..20)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.call(n).await })
            })
            .collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), Some(n as u32 * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|size| *size <= 8), "{sizes:?}");
        assert!(
            sizes.len() < 20,
            "callers waiting together share a batch: {sizes:?}"
        );
    }
}
