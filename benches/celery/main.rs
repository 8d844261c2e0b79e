//! Celery drop-in benchmark: a broker queue pre-filled with real
//! `file_attached.delay(...)` messages made by the celery package (the
//! interop Django project's task, routed to herald's queue), drained end to
//! end by herald (ingress, ledger, Redis queue, worker: every notification
//! committed and published, every Celery result written), and a sample of
//! the same calls drained by a Celery prefork worker (concurrency 2) running
//! the application's own task, in the same run, on the same database; once
//! with Celery's broker on Redis and once on RabbitMQ.
//!
//!     scripts/bench-celery     (= cargo bench --bench celery, with the venv)
//!
//! The database is made by Django's `migrate` (the application's tables,
//! foreign keys included), then `herald migrate`; 7,000 users and 1,000
//! tasks (each with an assignee and a creator, so each job writes two
//! notifications). Celery's results, herald's queue and both channel layers
//! are on one Redis (a redis-server the bench starts on a free port, or
//! HERALD_BENCH_REDIS), and so is Celery's broker on the Redis side; on the
//! AMQP side the broker is a vhost of the run's own on RabbitMQ.
//!
//! Parts: `bench` (what a run shares, the Python side's environment,
//! herald's settings, the database), `servers` (the private Redis, the
//! vhost), `drain` (herald's drain and the Celery sample's), `cpu` (CPU
//! time from /proc, Redis's time by command); the run and its table here.
//!
//! Environment: HERALD_BENCH_PYTHON (the interop venv's python; required),
//! HERALD_BENCH_POSTGRES (postgres://postgres@127.0.0.1:5432/test),
//! HERALD_BENCH_REDIS, HERALD_BENCH_BROKERS (redis,amqp: both),
//! HERALD_BENCH_AMQP (amqp://guest:guest@127.0.0.1:5672, managed with
//! `rabbitmqctl`), HERALD_BENCH_JOBS (100000), HERALD_BENCH_PEER_JOBS
//! (2000), HERALD_BENCH_APART (1: a second drain on each broker, the ingress
//! alone and then the worker alone), HERALD_BENCH_CELERY_BATCH
//! (celery.batch_size), HERALD_BENCH_CELERY_LOOPS (celery.concurrency). The
//! database and the vhost are dropped at the end.

mod bench;
#[path = "../common.rs"]
mod common;
mod cpu;
mod drain;
mod servers;

use std::sync::Arc;

use bench::{Bench, Broker, check, django_database, reset};
use common::{env_number, env_or};
use cpu::{Cpu, rabbitmq_at_rest, redis_time, report_redis_time};
use drain::{Peer, celery_drain, herald_drain};
use servers::{PrivateRedis, Vhost};

/// The same allocator as the `herald` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    herald::telemetry::init();
    let python = std::env::var("HERALD_BENCH_PYTHON")
        .expect("HERALD_BENCH_PYTHON: a python with the interop requirements (scripts/bench-celery sets it)");
    let jobs = env_number("HERALD_BENCH_JOBS", 100_000);
    let peer_jobs = env_number("HERALD_BENCH_PEER_JOBS", 2_000);
    let brokers = Broker::chosen();
    let (private, redis) = match std::env::var("HERALD_BENCH_REDIS") {
        Ok(url) => (None, url),
        Err(_) => {
            let (server, url) = PrivateRedis::start();
            (Some(server), url)
        }
    };
    let redis_pid = private.as_ref().map(|server| server.0.id());
    let admin = env_or(
        "HERALD_BENCH_POSTGRES",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let amqp = brokers.contains(&Broker::Amqp).then(|| {
        let base = env_or("HERALD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672");
        Vhost::new(&base, &tag)
    });
    let bench = Bench {
        url: format!(
            "{}/herald_bench_celery_{tag}",
            admin.rsplit_once('/').unwrap().0
        ),
        admin,
        redis,
        redis_pid,
        amqp,
        python,
        prefix: format!("bench-{tag}"),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bench = Arc::new(bench);
    runtime.block_on(async {
        // Run apart, so the database is dropped whatever happens to the run.
        let run = tokio::spawn(measure(bench.clone(), brokers, jobs, peer_jobs)).await;
        common::drop_database(&bench.admin, &bench.url).await;
        if let Err(failed) = run {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
    // The vhost (and its queues) goes with the last reference.
    drop(bench);
}

/// What one broker's drains gave.
struct Drained {
    broker: Broker,
    fill: f64,
    taken: f64,
    done: f64,
    cpu: Cpu,
    apart: Option<(f64, f64)>,
    peer: Peer,
    /// RabbitMQ's CPU at rest just before, ms per second.
    at_rest: Option<f64>,
}

/// herald's drain, the optional apart drain, and the Celery sample on
/// `broker`, the database reset after each.
async fn on_broker(
    bench: &Bench,
    store: &herald::store::Store,
    broker: Broker,
    jobs: usize,
    peer_jobs: usize,
) -> Drained {
    let name = broker.name();
    let tag = match broker {
        Broker::Redis => "herald",
        Broker::Amqp => "herald-amqp",
    };
    let queue = format!("{}-{tag}", bench.prefix);
    let at_rest = match broker {
        Broker::Redis => None,
        Broker::Amqp => Some(rabbitmq_at_rest(bench, 3).await),
    };
    let fill = bench.fill(broker, &queue, jobs);
    eprintln!("{name}: filled {jobs} messages in {fill:.1} s");
    let before = redis_time(bench).await;
    let cpu = Cpu::now(bench, broker);
    let (taken, done) = herald_drain(bench, broker, store, &queue, jobs, false).await;
    let cpu = Cpu::now(bench, broker).minus(&cpu);
    check(bench, store, jobs).await;
    report_redis_time(bench, broker, before, jobs).await;
    reset(bench, store).await;
    let apart = if std::env::var("HERALD_BENCH_APART").is_ok_and(|v| v == "1") {
        let queue = format!("{queue}-apart");
        bench.fill(broker, &queue, jobs);
        eprintln!("{name}: filled again: the ingress alone, then the worker alone");
        let drained = herald_drain(bench, broker, store, &queue, jobs, true).await;
        check(bench, store, jobs).await;
        reset(bench, store).await;
        Some(drained)
    } else {
        None
    };
    // The Celery sample: the same calls, run by the application's task.
    let peer = celery_drain(bench, broker, peer_jobs);
    reset(bench, store).await;
    Drained {
        broker,
        fill,
        taken,
        done,
        cpu,
        apart,
        peer,
        at_rest,
    }
}

/// The whole measurement; prints the table.
async fn measure(bench: Arc<Bench>, brokers: Vec<Broker>, jobs: usize, peer_jobs: usize) {
    let bench = &*bench;
    let store = django_database(bench).await;
    let mut runs = Vec::new();
    for broker in brokers {
        runs.push(on_broker(bench, &store, broker, jobs, peer_jobs).await);
    }
    store.close().await;

    println!(
        "\nDraining a broker queue pre-filled with file_attached.delay() messages \
         (PostgreSQL store; herald's queue, the layers and the results on Redis)"
    );
    println!(
        "| broker | worker | messages | off the broker (s) | all done and published (s) | jobs/s | vs Celery |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for run in &runs {
        let name = run.broker.name();
        let celery = run.peer.jobs_per_second;
        let herald = jobs as f64 / run.done;
        println!(
            "| {name} | Celery 5.7 prefork, concurrency 2 | {peer_jobs} | - | {:.1} | {celery:.0} | 1.0x |",
            peer_jobs as f64 / celery
        );
        println!(
            "| {name} | herald | {jobs} | {:.1} | {:.1} | {herald:.0} | {:.0}x |",
            run.taken,
            run.done,
            herald / celery
        );
        if let Some((ingress, worker)) = run.apart {
            println!(
                "| {name} | herald, ingress alone | {jobs} | {ingress:.1} | - | {:.0} | - |",
                jobs as f64 / ingress
            );
            println!(
                "| {name} | herald, then the worker alone | {jobs} | - | {worker:.1} | {:.0} | - |",
                jobs as f64 / worker
            );
        }
    }
    println!();
    for run in &runs {
        let name = run.broker.name();
        println!(
            "{name}: filled {jobs} messages with .delay() in {:.1} s",
            run.fill
        );
        if let Some(at_rest) = run.at_rest {
            println!("{name}: the node's CPU at rest just before the fill: {at_rest:.1} ms/s");
        }
        println!(
            "{name}: the Celery sample handed over in {:.2} s, its first row after {:.2} s",
            run.peer.handed_over, run.peer.first_row
        );
        run.cpu.report("herald", run.broker, jobs);
        run.peer
            .cpu
            .report("Celery (worker and pool)", run.broker, peer_jobs);
        println!(
            "{name}: CPU per job, Celery / herald: {:.0}x",
            run.peer.cpu.per_job(peer_jobs) / run.cpu.per_job(jobs)
        );
    }
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    let rate = |run: &Drained| jobs as f64 / run.done;
    for run in &runs {
        let (name, herald) = (run.broker.name(), rate(run));
        println!(
            "{name}: target >= 10,000 jobs/s: {} ({herald:.0})",
            met(herald >= 10_000.0)
        );
        let celery = run.peer.jobs_per_second;
        println!(
            "{name}: target >= 100x Celery: {} ({:.0}x)",
            met(herald >= 100.0 * celery),
            herald / celery
        );
    }
    let redis = runs.iter().find(|run| run.broker == Broker::Redis);
    let amqp = runs.iter().find(|run| run.broker == Broker::Amqp);
    if let (Some(redis), Some(amqp)) = (redis, amqp) {
        println!(
            "RabbitMQ: target >= the Redis broker's rate: {} ({:.0} against {:.0} jobs/s)",
            met(rate(amqp) >= rate(redis)),
            rate(amqp),
            rate(redis)
        );
    }
}
