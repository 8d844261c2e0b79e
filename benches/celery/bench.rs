//! What one run shares (the database, the private Redis, the RabbitMQ
//! vhost, the interop venv's python) and what each drain uses of it: the
//! Python side's environment for either broker, herald's settings, the
//! Django-made database, and the reset and checks between drains.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use herald::config::{LayerBackend, QueueBackend, Settings};
use herald::store::Store;

use crate::common::{create_database, env_number, migrated_store};
use crate::servers::Vhost;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Celery's broker for a drain: the private Redis, or the vhost on
/// RabbitMQ. Everything else (results, herald's queue, the channel layers)
/// stays on Redis either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broker {
    Redis,
    Amqp,
}

impl Broker {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Broker::Redis => "Redis",
            Broker::Amqp => "RabbitMQ",
        }
    }

    /// `HERALD_BENCH_BROKERS` (`redis,amqp`, the default: both).
    pub(crate) fn chosen() -> Vec<Broker> {
        let list = std::env::var("HERALD_BENCH_BROKERS").unwrap_or_else(|_| "redis,amqp".into());
        let brokers: Vec<Broker> = list
            .split(',')
            .map(|name| match name.trim() {
                "redis" => Broker::Redis,
                "amqp" | "rabbitmq" => Broker::Amqp,
                other => panic!("HERALD_BENCH_BROKERS: unknown broker {other:?} (redis, amqp)"),
            })
            .collect();
        assert!(!brokers.is_empty(), "HERALD_BENCH_BROKERS names no broker");
        brokers
    }
}

/// Everything one run shares.
pub(crate) struct Bench {
    pub(crate) admin: String,
    pub(crate) url: String,
    pub(crate) redis: String,
    /// The private redis-server's pid, for its CPU time.
    pub(crate) redis_pid: Option<u32>,
    /// The RabbitMQ vhost, when the AMQP broker is measured.
    pub(crate) amqp: Option<Vhost>,
    pub(crate) python: String,
    pub(crate) prefix: String,
}

impl Bench {
    /// kombu's URL of `broker`.
    pub(crate) fn broker_url(&self, broker: Broker) -> String {
        match broker {
            Broker::Redis => format!("{}/0", self.redis),
            Broker::Amqp => self.amqp.as_ref().expect("a vhost").url.clone(),
        }
    }

    /// `python ARGS` with the interop project's environment, Celery's broker
    /// `broker`.
    pub(crate) fn python(
        &self,
        args: &[&str],
        broker: Broker,
        queue: &str,
        results: bool,
    ) -> Command {
        let app = repo().join("tests/interop/django_app");
        let mut command = Command::new(&self.python);
        command
            .args(args)
            .current_dir(&app)
            .env("PYTHONPATH", &app)
            .env("DJANGO_SETTINGS_MODULE", "settings")
            .env("INTEROP_SECRET_KEY", "bench-secret")
            .env("INTEROP_DATABASE", &self.url)
            .env("INTEROP_ID_VARIANT", "bigauto")
            .env("INTEROP_REDIS_URL", &self.redis)
            .env("INTEROP_PREFIX", format!("{}-layer", self.prefix))
            .env("CELERY_BROKER_URL", self.broker_url(broker))
            .env("INTEROP_CELERY_QUEUE", queue)
            .env_remove("CELERY_RESULT_BACKEND");
        if results {
            command.env("CELERY_RESULT_BACKEND", format!("{}/1", self.redis));
        }
        command
    }

    /// Runs a Python command to its end; its one JSON line.
    pub(crate) fn run(&self, mut command: Command, what: &str) -> serde_json::Value {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .expect("python runs");
        assert!(output.status.success(), "{what} failed");
        let out = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(out.trim().lines().last().unwrap_or_default())
            .unwrap_or_else(|_| panic!("{what} printed {out}"))
    }

    /// `jobs` real `file_attached.delay()` calls into `queue` on `broker`;
    /// seconds.
    pub(crate) fn fill(&self, broker: Broker, queue: &str, jobs: usize) -> f64 {
        let peer = repo().join("benches/celery_peer.py");
        let peer = peer.to_str().unwrap();
        let args = [peer, "fill", "--jobs", &jobs.to_string()];
        let command = self.python(&args, broker, queue, false);
        self.run(command, "celery_peer.py fill")["seconds"]
            .as_f64()
            .unwrap()
    }

    /// herald's settings for draining `queue` from `broker`.
    pub(crate) fn settings(&self, broker: Broker, queue: &str) -> Settings {
        let mut settings = Settings::defaults();
        settings.database.url = self.url.clone();
        settings.database.max_connections = 20;
        settings.data_dir = std::env::temp_dir().join(format!("herald-bench-{}", self.prefix));
        settings.secret_key = Some("bench-secret".to_string().into());
        settings.layer.backend = LayerBackend::Redis;
        settings.layer.hosts = vec![self.redis.clone()];
        settings.layer.prefix = format!("{}-layer", self.prefix);
        settings.queue.backend = QueueBackend::Redis;
        settings.queue.redis_url = self.redis.clone();
        settings.queue.prefix = format!("{}-queue", self.prefix);
        settings.queue.poll_interval = Duration::from_millis(10);
        settings.celery.broker_url = self.broker_url(broker).into();
        settings.celery.result_backend = format!("{}/1", self.redis).into();
        settings.celery.queues = vec![queue.to_string()];
        settings.celery.batch_size =
            env_number("HERALD_BENCH_CELERY_BATCH", settings.celery.batch_size);
        settings.celery.concurrency =
            env_number("HERALD_BENCH_CELERY_LOOPS", settings.celery.concurrency);
        settings
    }
}

/// A fresh database made by Django's `migrate` and `herald migrate`, with
/// the users and tasks the jobs name.
pub(crate) async fn django_database(bench: &Bench) -> Store {
    create_database(&bench.admin, url_name(&bench.url)).await;
    let mut migrate = bench.python(
        &["manage.py", "migrate", "-v0"],
        Broker::Redis,
        "none",
        false,
    );
    let status = migrate.status().expect("python runs");
    assert!(status.success(), "Django's migrate");
    let store = migrated_store(&bench.url).await;
    let Store::Postgres(pool) = &store else {
        unreachable!("PostgreSQL")
    };
    sqlx::raw_sql(
        "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, \
                                is_staff, is_active, date_joined) \
         SELECT i, '', false, 'u' || i, '', '', '', false, true, now() FROM generate_series(1, 7000) i; \
         INSERT INTO tasks_task (title, status, deadline, assignee_id, created_by_id, created_at, updated_at) \
         SELECT 'Task ' || i, 'todo', NULL, 1000 + i, 5000 + i, now(), now() FROM generate_series(1, 1000) i; \
         ANALYZE",
    )
    .execute(pool)
    .await
    .unwrap();
    store
}

pub(crate) fn url_name(url: &str) -> &str {
    url.rsplit_once('/').unwrap().1
}

async fn results_db(bench: &Bench) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("{}/1", bench.redis))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Empties what a drain left: notifications, ledger, outbox, results.
pub(crate) async fn reset(bench: &Bench, store: &Store) {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL")
    };
    for sql in [
        "TRUNCATE notifications_notification, herald_jobs, herald_outbox",
        "VACUUM ANALYZE",
    ] {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
    }
    let () = redis::cmd("FLUSHDB")
        .query_async(&mut results_db(bench).await)
        .await
        .unwrap();
}

/// Rows of notifications, and one Celery result per job.
pub(crate) async fn check(bench: &Bench, store: &Store, jobs: usize) {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL")
    };
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications_notification")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 2 * jobs as i64, "two notifications per job");
    let stored: u64 = redis::cmd("DBSIZE")
        .query_async(&mut results_db(bench).await)
        .await
        .unwrap();
    assert_eq!(stored, jobs as u64, "one Celery result per job");
}
