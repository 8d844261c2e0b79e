//! The two drains of a filled queue: herald's (its ingress and worker in
//! this process, timed until every message is off the broker and every job
//! done and published) and the Celery prefork sample's (benches/celery_peer.py
//! `drain`), on either broker.

use std::time::{Duration, Instant};

use herald::ingress::Ingress;
use herald::queue::JobQueue;
use herald::store::{JobState, Store};
use herald::worker::Worker;

use crate::bench::{Bench, Broker, repo};
use crate::common::all_published;
use crate::cpu::Cpu;
use crate::servers::Depth;

/// Watches the broker for the end of the ingress's part.
enum Watch {
    /// Celery's Redis broker: the queue's list and the `unacked` hash.
    Redis(redis::aio::MultiplexedConnection),
    /// RabbitMQ: passive declares count the ready messages only, so the
    /// held ones are known gone when the ledger has every job (each batch is
    /// acknowledged right after its ledger statement; `rabbitmqctl` checks
    /// the queue is empty at the end).
    Amqp(Box<Depth>),
}

impl Watch {
    async fn open(bench: &Bench, broker: Broker) -> Watch {
        match broker {
            Broker::Redis => Watch::Redis(
                redis::Client::open(bench.broker_url(broker))
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
            Broker::Amqp => Watch::Amqp(Box::new(Depth::open(&bench.broker_url(broker)).await)),
        }
    }

    /// Whether every message is off the broker (recorded and acknowledged).
    async fn drained(&mut self, store: &Store, queue: &str, jobs: usize) -> bool {
        match self {
            Watch::Redis(conn) => {
                // A loaded machine can take longer than the client's response
                // timeout: that poll counts as not drained yet.
                let counts: redis::RedisResult<(u64, u64)> = redis::pipe()
                    .cmd("LLEN")
                    .arg(queue)
                    .cmd("HLEN")
                    .arg("unacked")
                    .query_async(conn)
                    .await;
                matches!(counts, Ok((0, 0)))
            }
            Watch::Amqp(depth) => {
                if depth.ready(queue).await > 0 {
                    return false;
                }
                let Store::Postgres(pool) = store else {
                    unreachable!("PostgreSQL")
                };
                let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM herald_jobs")
                    .fetch_one(pool)
                    .await
                    .unwrap();
                recorded >= jobs as i64
            }
        }
    }

    async fn close(self) {
        if let Watch::Amqp(depth) = self {
            depth.close().await;
        }
    }
}

/// Herald drains `queue` (`jobs` messages) from `broker`: seconds until
/// every message is off the broker (recorded and acknowledged), and until
/// every job is done and published. `apart`: the ingress alone first, then
/// the worker alone (its clock starting when it starts), to show what each
/// part costs.
pub(crate) async fn herald_drain(
    bench: &Bench,
    broker: Broker,
    store: &Store,
    queue: &str,
    jobs: usize,
    apart: bool,
) -> (f64, f64) {
    let settings = bench.settings(broker, queue);
    let mut watch = Watch::open(bench, broker).await;
    let job_queue = JobQueue::connect(&settings).await.unwrap();
    let start_worker = || {
        let layer = herald::layer::build(&settings.layer).unwrap();
        Worker::start(&settings, store.clone(), layer, job_queue.clone())
    };
    let started = Instant::now();
    let worker = if apart {
        None
    } else {
        Some(start_worker().await.unwrap())
    };
    let mut ingress = Ingress::start(&settings, store.clone(), job_queue.clone())
        .await
        .unwrap();
    assert!(ingress.is_some(), "a broker is configured");
    while !watch.drained(store, queue, jobs).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "herald's ingress stalled"
        );
    }
    let taken = started.elapsed().as_secs_f64();
    watch.close().await;
    let (worker, started) = match worker {
        Some(worker) => (worker, started),
        None => {
            if let Some(ingress) = ingress.take() {
                ingress.shutdown(Duration::from_secs(10)).await;
            }
            let started = Instant::now();
            (start_worker().await.unwrap(), started)
        }
    };
    while !all_published(store).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "herald stalled"
        );
    }
    let done = started.elapsed().as_secs_f64();
    assert_eq!(
        store.count_jobs(JobState::Done).await.unwrap(),
        jobs as i64,
        "every job done"
    );
    if let Some(ingress) = ingress {
        ingress.shutdown(Duration::from_secs(10)).await;
    }
    worker.shutdown(Duration::from_secs(10)).await;
    job_queue.close().await;
    if let (Broker::Amqp, Some(vhost)) = (broker, &bench.amqp) {
        assert_eq!(vhost.counts(queue), (0, 0), "RabbitMQ's queue left empty");
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    (taken, done)
}

/// What the Celery sample gave: jobs per second and its CPU.
pub(crate) struct Peer {
    pub(crate) jobs_per_second: f64,
    pub(crate) cpu: Cpu,
    /// Seconds from the clock's start until the hand-over (RENAME or
    /// `add_consumer`) returned, and until the sample's first row.
    pub(crate) handed_over: f64,
    pub(crate) first_row: f64,
}

/// The Celery sample on `broker`: `jobs` of the same calls filled into a
/// queue of their own, handed to a warmed-up `celery worker -P prefork -c 2`
/// running the application's task.
pub(crate) fn celery_drain(bench: &Bench, broker: Broker, jobs: usize) -> Peer {
    let tag = match broker {
        Broker::Redis => "peer",
        Broker::Amqp => "peer-amqp",
    };
    let source = format!("{}-{tag}-fill", bench.prefix);
    bench.fill(broker, &source, jobs);
    let peer = repo().join("benches/celery_peer.py");
    let peer_queue = format!("{}-{tag}", bench.prefix);
    let args = [
        peer.to_str().unwrap(),
        "drain",
        "--queue",
        &peer_queue,
        "--from",
        &source,
    ];
    let mut command = bench.python(&args, broker, &peer_queue, true);
    command.args(["--jobs", &jobs.to_string()]);
    let before = Cpu::now(bench, broker);
    let peer = bench.run(command, "celery_peer.py drain");
    let mut cpu = Cpu::now(bench, broker).minus(&before);
    // The Celery worker and its pool stand where herald's process does.
    cpu.worker = peer["worker_cpu_seconds"].as_f64().unwrap_or_default();
    Peer {
        jobs_per_second: peer["jobs_per_second"].as_f64().unwrap(),
        cpu,
        handed_over: peer["handed_over_seconds"].as_f64().unwrap_or_default(),
        first_row: peer["first_row_seconds"].as_f64().unwrap_or_default(),
    }
}
