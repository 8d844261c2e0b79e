//! What a drain costs in CPU time, read from `/proc` (utime + stime), so it
//! holds whatever else the machine runs: herald's process (for Celery, its
//! worker and pool, which the peer measures), the PostgreSQL backends of
//! the bench's database, the private redis-server, and on the AMQP broker
//! RabbitMQ's beam.smp. Also Redis's own time per command during a drain.

use std::collections::BTreeMap;

use crate::bench::{Bench, Broker, url_name};

/// CPU seconds used so far by each side of a drain.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// herald's process, or the Celery worker and its pool.
    pub(crate) worker: f64,
    pub(crate) postgres: f64,
    pub(crate) redis: f64,
    /// RabbitMQ's node (zero on the Redis broker, where it takes no part).
    pub(crate) rabbitmq: f64,
}

/// utime + stime of a process, in seconds (100 ticks a second).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn pid_seconds(pid: Option<u32>) -> f64 {
    pid.and_then(|pid| cpu_seconds(&pid.to_string()))
        .unwrap_or_default()
}

impl Cpu {
    pub(crate) fn now(bench: &Bench, broker: Broker) -> Cpu {
        let database = format!(" {} ", url_name(&bench.url));
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let title = String::from_utf8_lossy(&title);
            if title.starts_with("postgres: ") && title.contains(&database) {
                postgres += cpu_seconds(&pid).unwrap_or_default();
            }
        }
        let rabbitmq = match broker {
            Broker::Redis => 0.0,
            Broker::Amqp => pid_seconds(bench.amqp.as_ref().and_then(|vhost| vhost.pid)),
        };
        Cpu {
            worker: cpu_seconds("self").unwrap_or_default(),
            postgres,
            redis: pid_seconds(bench.redis_pid),
            rabbitmq,
        }
    }

    pub(crate) fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            worker: self.worker - before.worker,
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
            rabbitmq: self.rabbitmq - before.rabbitmq,
        }
    }

    /// Total CPU seconds per job.
    pub(crate) fn per_job(&self, jobs: usize) -> f64 {
        (self.worker + self.postgres + self.redis + self.rabbitmq) / jobs as f64
    }

    /// Per job, and the rate two cores with nothing else to run would give.
    pub(crate) fn report(&self, worker: &str, broker: Broker, jobs: usize) {
        let per_job = |seconds: f64| seconds * 1e6 / jobs as f64;
        let servers = match broker {
            Broker::Redis => format!("Redis {:.0} µs", per_job(self.redis)),
            Broker::Amqp => format!(
                "RabbitMQ {:.0} µs, Redis (queue, layer, results) {:.0} µs",
                per_job(self.rabbitmq),
                per_job(self.redis)
            ),
        };
        println!(
            "CPU per job, {} broker: {worker} {:.0} µs, PostgreSQL backends {:.0} µs, {servers}; \
             total {:.0} µs (two otherwise idle cores: at most {:.0} jobs/s)",
            broker.name(),
            per_job(self.worker),
            per_job(self.postgres),
            self.per_job(jobs) * 1e6,
            2.0 / self.per_job(jobs)
        );
    }
}

/// RabbitMQ's CPU use at rest, in ms per second over `seconds` (the node
/// is the machine's, shared with whatever else uses it).
pub(crate) async fn rabbitmq_at_rest(bench: &Bench, seconds: u64) -> f64 {
    let pid = bench.amqp.as_ref().and_then(|vhost| vhost.pid);
    let before = pid_seconds(pid);
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    (pid_seconds(pid) - before) * 1e3 / seconds as f64
}

/// Redis's own time per command (`INFO commandstats`: calls, usec).
pub(crate) async fn redis_time(bench: &Bench) -> BTreeMap<String, (u64, u64)> {
    let mut conn = redis::Client::open(bench.redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            };
            Some((name.to_string(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Prints where Redis spent its time during a drain, per job.
pub(crate) async fn report_redis_time(
    bench: &Bench,
    broker: Broker,
    before: BTreeMap<String, (u64, u64)>,
    jobs: usize,
) {
    let after = redis_time(bench).await;
    let mut spent: Vec<(String, u64, u64)> = after
        .into_iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(&name).copied().unwrap_or_default();
            (name, calls - c0, usec - u0)
        })
        .filter(|(_, calls, _)| *calls > 0)
        .collect();
    spent.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    // A script's time includes the commands it ran, which count again
    // under their own names.
    eprintln!(
        "Redis time by command during herald's drain from the {} broker \
         (scripts include their commands):",
        broker.name()
    );
    for (name, calls, usec) in spent.iter().take(10) {
        let per_job = *usec as f64 / jobs as f64;
        eprintln!(
            "  {name}: {calls} calls, {:.2} s ({per_job:.1} µs per job)",
            *usec as f64 / 1e6
        );
    }
}
