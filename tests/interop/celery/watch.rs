//! The Celery worker beside herald and what the tests read off the broker:
//! the real `celery worker` on the application's own queue, its runs, what
//! it holds and what waits, on Redis (kombu's `unacked` bookkeeping) and on
//! RabbitMQ (the vhost's queue counts).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::django::{DjangoProject, Server, rows};
use crate::harness::redis_conn;

use super::harness::*;

impl Celery {
    /// The real `celery -A celery_app ARGS` CLI of the application, as an
    /// operator runs it: its exit status and what it printed.
    pub(super) fn cli(&self, project: &DjangoProject, args: &[&str]) -> (ExitStatus, String) {
        let mut command = project.python(&["-m", "celery", "-A", "celery_app"]);
        self.env(&mut command);
        let output = command.args(args).output().expect("celery runs");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, printed)
    }

    /// The real Flower (`celery -A celery_app flower`) on `port`, its API
    /// open without a login, on the application's broker; in a process
    /// group of its own, killed on drop.
    pub(super) fn flower(&self, project: &DjangoProject, port: u16) -> Server {
        let mut command = project.python(&["-m", "celery", "-A", "celery_app", "flower"]);
        self.env(&mut command);
        command
            .args([format!("--port={port}"), "--address=127.0.0.1".into()])
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Server::wait(command.spawn().expect("flower starts"), port, "flower")
    }

    /// `AsyncResult(id).revoke()` for each of `ids`, as the application
    /// revokes what it scheduled.
    pub(super) fn revoke(&self, project: &DjangoProject, ids: &[String]) {
        let answer = self.interop(project, json!({"op": "celery_revoke", "ids": ids}));
        assert_eq!(answer["revoked"], ids.len(), "{answer}");
    }

    pub(super) async fn redis(&self, db: u8) -> redis::aio::MultiplexedConnection {
        redis_conn(&format!("{}/{db}", self.redis.url())).await
    }

    /// `celery worker` of the application on [`KEPT_QUEUE`] only, as the
    /// application's remaining workers run: prefork, two processes,
    /// prefetching 4 messages each. In a process group of its own, which
    /// [`Worker`]'s drop kills.
    pub(super) fn worker(&self, project: &DjangoProject, name: &str) -> Worker {
        let mut command = project.python(&["-m", "celery", "-A", "celery_app", "worker"]);
        self.env(&mut command);
        command
            .args(["-Q", KEPT_QUEUE, "-P", "prefork", "-c", "2"])
            .args(["--prefetch-multiplier", "4", "-n", &format!("{name}@%h")])
            .args([
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ])
            .args(["-l", "warning"])
            .env("INTEROP_RUNS_URL", format!("{}/2", self.redis.url()))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Worker(command.spawn().expect("celery worker starts"))
    }

    /// [`REINDEX`]'s runs so far (by the Celery workers), by task id.
    pub(super) async fn runs(&self) -> HashMap<String, i64> {
        redis::cmd("HGETALL")
            .arg("interop:runs")
            .query_async(&mut self.redis(2).await)
            .await
            .unwrap()
    }

    /// Messages of `queue` held unacknowledged: on Redis how long each has
    /// been held, in seconds (kombu's `unacked_index` scores); on RabbitMQ,
    /// which does not say, 0 for each.
    pub(super) async fn held_on(&self, queue: &str) -> Vec<f64> {
        if let Some(vhost) = &self.amqp {
            return vec![0.0; vhost.counts(queue).1 as usize];
        }
        let mut conn = self.redis(0).await;
        let held: HashMap<String, String> = redis::cmd("HGETALL")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        let taken: HashMap<String, f64> = redis::cmd("ZRANGE")
            .arg("unacked_index")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        held.iter()
            .filter(|(_, value)| {
                let value: Value = serde_json::from_str(value).unwrap();
                value[2] == queue
            })
            .map(|(tag, _)| taken.get(tag).map_or(0.0, |at| now - at))
            .collect()
    }

    /// Watches [`KEPT_QUEUE`]'s side every 50 ms until `done(tasks run,
    /// messages held, messages waiting)`, each task run at most once
    /// throughout; `longest` keeps the longest hold seen. Fails if `worker`
    /// dies or `seconds` pass.
    pub(super) async fn watch_kept(
        &self,
        worker: &mut Worker,
        longest: &mut f64,
        seconds: u64,
        done: impl Fn(usize, usize, usize) -> bool,
    ) {
        let started = Instant::now();
        loop {
            // One look at the broker for both on RabbitMQ (each look is a
            // rabbitmqctl of half a second).
            let (held, waiting) = match &self.amqp {
                Some(vhost) => {
                    let (ready, unacked) = vhost.counts(KEPT_QUEUE);
                    (vec![0.0; unacked as usize], ready as usize)
                }
                None => (
                    self.held_on(KEPT_QUEUE).await,
                    self.waiting(KEPT_QUEUE).await,
                ),
            };
            *longest = held.iter().copied().fold(*longest, f64::max);
            let ran = once_each(&self.runs().await);
            if done(ran, held.len(), waiting) {
                return;
            }
            assert!(worker.0.try_wait().unwrap().is_none(), "celery worker died");
            assert!(
                started.elapsed() < Duration::from_secs(seconds),
                "the Celery worker ran {ran}, holds {}, {waiting} wait",
                held.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages waiting in `queue`.
    pub(super) async fn waiting(&self, queue: &str) -> usize {
        if let Some(vhost) = &self.amqp {
            return vhost.counts(queue).0 as usize;
        }
        redis::cmd("LLEN")
            .arg(queue)
            .query_async(&mut self.redis(0).await)
            .await
            .unwrap()
    }

    /// Entries of kombu's `unacked` hash and `unacked_index` sorted set; on
    /// RabbitMQ the messages unacknowledged in every queue, twice.
    pub(super) async fn bookkeeping(&self) -> (usize, usize) {
        if let Some(vhost) = &self.amqp {
            let held: u64 = vhost.queues().values().map(|(_, unacked)| unacked).sum();
            return (held as usize, held as usize);
        }
        let mut conn = self.redis(0).await;
        let hash: usize = redis::cmd("HLEN")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        let index: usize = redis::cmd("ZCARD")
            .arg("unacked_index")
            .query_async(&mut conn)
            .await
            .unwrap();
        (hash, index)
    }

    /// Wave `wave` of `.delay()` calls: 20 of [`REINDEX`] for Celery, each
    /// followed by 7 or 8 of `notify` for herald (150). The task ids of
    /// Celery's calls, and herald's as (task id, title).
    pub(super) fn interleaved(
        &self,
        project: &DjangoProject,
        user: i64,
        wave: usize,
    ) -> (Vec<String>, Vec<(String, String)>) {
        const KEPT: usize = 20;
        const OURS: usize = 150;
        let mut calls = Vec::new();
        let mut titles = Vec::new();
        for k in 0..KEPT {
            calls.push(delay(REINDEX, json!([WORK])));
            titles.push(None);
            for i in OURS * k / KEPT..OURS * (k + 1) / KEPT {
                let title = format!("w{wave}-{i}");
                calls.push(delay(NOTIFY, json!([user, title, "beside Celery"])));
                titles.push(Some(title));
            }
        }
        let ids = self.send(project, calls);
        let mut kept = Vec::new();
        let mut ours = Vec::new();
        for (id, title) in ids.into_iter().zip(titles) {
            match title {
                Some(title) => ours.push((id, title)),
                None => kept.push(id),
            }
        }
        (kept, ours)
    }

    /// Each of `ids` (`notify` calls of distinct titles) ran once: one job
    /// each and no other, one row each and no title twice, and a SUCCESS
    /// result each.
    pub(super) async fn each_ran_once(
        &self,
        project: &DjangoProject,
        pool: &sqlx::PgPool,
        ids: &[String],
    ) {
        let jobs = scalar(pool, "SELECT count(*) FROM herald_jobs").await;
        assert_eq!(jobs, ids.len() as i64, "one job per message");
        let stored = rows(project);
        assert_eq!(stored.len(), ids.len(), "one row per message");
        let mut titles: Vec<&str> = stored
            .values()
            .map(|r| r["title"].as_str().unwrap())
            .collect();
        titles.sort_unstable();
        titles.dedup();
        assert_eq!(titles.len(), ids.len(), "no message ran twice");
        let results = self.results(project, ids, 30);
        let succeeded = results.iter().filter(|r| r["status"] == "SUCCESS").count();
        assert_eq!(succeeded, ids.len(), "every result written");
    }

    /// Messages waiting in herald's queue, and held unacknowledged.
    pub(super) async fn broker_counts(&self) -> (usize, usize) {
        if let Some(vhost) = &self.amqp {
            let (ready, unacked) = vhost.counts(&self.queue);
            return (ready as usize, unacked as usize);
        }
        let mut conn = self.redis(0).await;
        let waiting: usize = redis::cmd("LLEN")
            .arg(&self.queue)
            .query_async(&mut conn)
            .await
            .unwrap();
        let held: usize = redis::cmd("HLEN")
            .arg("unacked")
            .query_async(&mut conn)
            .await
            .unwrap();
        (waiting, held)
    }
}

/// A Celery worker started by [`Celery::worker`]; dropped, its process
/// group is killed.
pub(super) struct Worker(pub(super) Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let group = format!("-{}", self.0.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.0.wait();
        }
    }
}

/// Sends signal `name` (`TERM`, `STOP`, ...) to process `pid`.
pub(super) fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{name} {pid}");
}

/// How many tasks of `runs` (task id -> runs) ran, each once.
pub(super) fn once_each(runs: &HashMap<String, i64>) -> usize {
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "ran more than once: {repeated:?}");
    runs.len()
}

/// `child`'s exit status, waiting up to `limit` for it.
pub(super) async fn exited(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
