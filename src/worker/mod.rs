//! The worker: scheduled scans (and, with the queue, submitted jobs) run
//! through the job handlers; the outbox publisher retries failed publishes.

pub mod scheduler;
