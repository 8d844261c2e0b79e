//! apalis's private layout, as herald's raw SQL and Lua read it
//! (`herald::queue::apalis_layout`): the apalis versions in Cargo.lock are
//! the ones that layout names, apalis's `Jobs` tables on SQLite and
//! PostgreSQL have the columns and status values the SQL uses, and an entry
//! pushed through apalis-redis sits under the keys the Lua expects. An
//! apalis upgrade that moves any of it fails here.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Status, WorkerContext};
use herald::layer::{ChannelLayer, MemoryLayer};
use herald::queue::apalis_layout::{APALIS_VERSIONS, redis as layout, sql};
use herald::queue::{JobQueue, Queued, Submission, submit};
use herald::store::{JobState, Store};
use herald::worker::Worker;
use redis::AsyncCommands;
use serde_json::json;

use crate::queue::{Case, QueueEnv, queue_env, wait_for_state};

/// Every apalis crate in Cargo.lock, with its version, is one that
/// `APALIS_VERSIONS` names, and the other way round.
#[test]
fn apalis_versions_are_the_ones_in_cargo_lock() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    let lock = std::fs::read_to_string(path).expect("Cargo.lock");
    let mut locked: Vec<(String, String)> = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.strip_prefix(" = ")?;
                Some(value.trim_matches('"').to_string())
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        if name == "apalis" || name.starts_with("apalis-") {
            locked.push((name, version));
        }
    }
    locked.sort();
    let mut named: Vec<(String, String)> = APALIS_VERSIONS
        .iter()
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect();
    named.sort();
    assert_eq!(
        locked, named,
        "apalis changed in Cargo.lock: check src/queue/apalis_layout against the new \
         versions' migrations and Lua, then update APALIS_VERSIONS"
    );
}

/// The status values the SQL uses are apalis-core's own `Status` text.
#[test]
fn the_sql_status_values_are_apalis_statuses() {
    for status in sql::STATUSES {
        let parsed = Status::from_str(status).unwrap_or_else(|_| panic!("{status}"));
        assert_eq!(parsed.to_string(), *status);
    }
}

fn notify(title: &str) -> Submission {
    let payload =
        json!({"user_id": 5, "title": title, "message": "m", "notification_type": "info"});
    crate::queue::submission("notify", payload)
}

/// Runs a worker until ledger job `id` is done.
async fn run_until_done(env: &QueueEnv, queue: &JobQueue, id: &str) {
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::new(&env.settings.layer).unwrap());
    let worker = Worker::start(&env.settings, env.db.store.clone(), layer, queue.clone())
        .await
        .unwrap();
    wait_for_state(&env.db.store, id, JobState::Done).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

/// An apalis row as the SQL reads it: status, queue name, data, whether
/// `done_at` is set, and `done_at` as Unix seconds.
type Row = (String, String, Vec<u8>, Option<i64>);

/// apalis's `Jobs` table has the columns (with their types) and the status
/// values the raw SQL relies on; an entry pushed by herald is `Pending`
/// under its queue name with its JSON, and a finished one is `Done` with
/// `done_at` set to about now, as pruning expects.
async fn sql_layout_body(case: Case) {
    let env = queue_env(case).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let name = env.settings.queue.queue_name("notify");
    let submitted = submit(&env.db.store, &queue, notify("layout"))
        .await
        .unwrap();

    let sqlite = match case {
        Case::Sqlite => {
            let path = env.settings.data_dir.join("queue.sqlite3");
            let url = format!("sqlite://{}", path.display());
            Some(sqlx::SqlitePool::connect(&url).await.unwrap())
        }
        _ => None,
    };
    let columns: Vec<(String, String)> = match (&sqlite, &env.db.store) {
        (Some(pool), _) => sqlx::query_as("SELECT name, type FROM pragma_table_info('Jobs')")
            .fetch_all(pool)
            .await
            .unwrap(),
        (None, Store::Postgres(pool)) => sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'apalis' AND table_name = 'jobs'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        (None, Store::Sqlite(_)) => unreachable!("a PostgreSQL queue on a PostgreSQL store"),
    };
    for (column, on_sqlite, on_postgres) in sql::COLUMNS {
        let declared = if sqlite.is_some() {
            on_sqlite
        } else {
            on_postgres
        };
        let found = columns.iter().find(|(name, _)| name == column);
        assert_eq!(
            found.map(|(_, kind)| kind.as_str()),
            Some(*declared),
            "apalis's Jobs.{column} in {columns:?}"
        );
    }

    let read = async || -> Vec<Row> {
        match (&sqlite, &env.db.store) {
            (Some(pool), _) => {
                sqlx::query_as("SELECT status, job_type, job, done_at FROM Jobs WHERE job_type = ?")
                    .bind(&name)
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }
            (None, Store::Postgres(pool)) => sqlx::query_as(
                "SELECT status, job_type, job, extract(epoch FROM done_at)::bigint \
                 FROM apalis.jobs WHERE job_type = $1",
            )
            .bind(&name)
            .fetch_all(pool)
            .await
            .unwrap(),
            (None, Store::Sqlite(_)) => unreachable!(),
        }
    };
    let rows = read().await;
    assert_eq!(rows.len(), 1, "one entry in the notify queue");
    let (status, job_type, job, done_at) = &rows[0];
    assert_eq!(
        (status.as_str(), job_type, done_at),
        ("Pending", &name, &None)
    );
    let item: Queued = serde_json::from_slice(job).expect("the entry's data is herald's JSON");
    assert_eq!(item.id, submitted.id);

    run_until_done(&env, &queue, &submitted.id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = read().await;
        if rows[0].0 != "Pending" && rows[0].0 != "Running" && rows[0].0 != "Queued" {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "apalis never acknowledged: {:?}",
            rows[0].0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, _, _, done_at) = &rows[0];
    assert_eq!(status, "Done");
    let done_at = done_at.expect("done_at set when done");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - 60..=now + 1).contains(&done_at),
        "done_at {done_at} is Unix seconds near {now}"
    );
    if let Some(pool) = sqlite {
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apalis_sqlite_jobs_table_is_what_the_sql_reads() {
    sql_layout_body(Case::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apalis_postgres_jobs_table_is_what_the_sql_reads() {
    sql_layout_body(Case::Postgres).await
}

/// An entry pushed through apalis-redis: its id in the scheduled set
/// scored by its run time in Unix seconds (due now or later alike), its
/// JSON in the data hash, its status in `<meta>:<id>`; a worker's in-flight
/// set is named as apalis names it; a finished entry is in the done set
/// with status `Done` and `done_at` in Unix seconds, as the Lua expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apalis_redis_keys_are_what_the_lua_reads() {
    let env = queue_env(Case::Redis).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let store = &env.db.store;
    let config = apalis_redis::Config::default().queue(env.settings.queue.queue_name("notify"));
    let client = redis::Client::open(env.settings.queue_redis_url().unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    assert_eq!(
        layout::inflight_set(&config, "herald-w-1"),
        config.inflight_set_for(&WorkerContext::new("herald-w-1"))
    );

    let now = submit(store, &queue, notify("now")).await.unwrap();
    let later_at = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let mut later = notify("later");
    later.run_at = Some(later_at);
    let later = submit(store, &queue, later).await.unwrap();

    // Every entry goes through the scheduled set, scored by its run time in
    // Unix seconds, as `promote_due` expects; the active list is empty until
    // a fetch or a promotion.
    let active: i64 = conn.llen(config.active_jobs_list()).await.unwrap();
    let scheduled: Vec<(String, f64)> = conn
        .zrange_withscores(config.scheduled_jobs_set(), 0, -1)
        .await
        .unwrap();
    assert_eq!((active, scheduled.len()), (0, 2), "{scheduled:?}");
    let mut entry_of_now = None;
    for (entry, score) in &scheduled {
        let data: Vec<u8> = conn.hget(config.job_data_hash(), entry).await.unwrap();
        let item: Queued = serde_json::from_slice(&data).expect("herald's JSON in the data hash");
        let status: Option<String> = conn
            .hget(layout::meta_key(&config, entry), "status")
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("Pending"), "metadata of {entry}");
        let score = *score as i64;
        if item.id == later.id {
            assert_eq!(score, later_at.timestamp(), "scheduled by Unix seconds");
        } else {
            assert_eq!(item.id, now.id);
            let now_s = chrono::Utc::now().timestamp();
            assert!((now_s - 60..=now_s).contains(&score), "due now: {score}");
            entry_of_now = Some(entry.clone());
        }
    }

    run_until_done(&env, &queue, &now.id).await;
    let entry = &entry_of_now.expect("the entry due now");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !conn
        .sismember::<_, _, bool>(config.done_jobs_set(), entry)
        .await
        .unwrap()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{entry} never reached the done set"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, done_at): (Option<String>, Option<String>) = redis::pipe()
        .hget(layout::meta_key(&config, entry), "status")
        .hget(layout::meta_key(&config, entry), "done_at")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("Done"));
    let done_at: i64 = done_at
        .expect("done_at set")
        .parse()
        .expect("whole seconds");
    let now_s = chrono::Utc::now().timestamp();
    assert!(
        (now_s - 60..=now_s + 1).contains(&done_at),
        "done_at {done_at} near {now_s}"
    );
}
