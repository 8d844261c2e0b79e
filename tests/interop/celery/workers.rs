//! Herald among processes: killed with -9 in the middle of a stream, a
//! real Celery worker sharing its broker, and `celery beat` beside herald's
//! own scheduler.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::On;
use super::harness::*;
use super::watch::*;
use crate::django::*;

on_both_brokers!(kill_9_in_the_middle_of_5000_messages_loses_none_and_repeats_none);

/// kill -9 of herald in the middle of 5,000 messages, while it holds some
/// taken and not yet acknowledged (frozen with SIGSTOP until it does), then
/// a restart: what the dead process held goes back to the queue and every
/// message runs once (one row each, no repeats), with its result.
async fn kill_9_in_the_middle_of_5000_messages_loses_none_and_repeats_none(broker: On) {
    const MESSAGES: usize = 5000;
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let calls = (0..MESSAGES)
        .map(|i| delay(NOTIFY, json!([ada, format!("k{i}"), "once"])))
        .collect();
    let ids = celery.send(&project, calls);
    // Small rounds, so the kill finds some taken and not yet acknowledged.
    let knobs = [
        ("HERALD_CELERY__BATCH_SIZE", "20"),
        ("HERALD_CELERY__CONCURRENCY", "1"),
        ("HERALD_CELERY__RESTORE_AFTER", "2s"),
    ];
    let pool = ledger(&project).await;
    let mut first = celery.herald(&project, &knobs);
    let started = Instant::now();
    while scalar(&pool, "SELECT count(*) FROM herald_jobs").await < 500 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "herald took no messages"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Frozen, it holds what it held; killed only while that is some.
    let pid = first.child.id();
    let mut tries = 0;
    let held = loop {
        tries += 1;
        signal(pid, "STOP");
        // What it sent before it stopped reaches the broker meanwhile.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, held) = celery.broker_counts().await;
        if held > 0 {
            break held;
        }
        assert!(tries < 200, "herald never held a message when frozen");
        signal(pid, "CONT");
        tokio::time::sleep(Duration::from_millis(tries % 7)).await;
    };
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    // On Redis the held ones stay in `unacked` until the restore; on AMQP
    // the broker puts them back as the connection dies.
    let (waiting, _) = celery.broker_counts().await;
    eprintln!(
        "killed at freeze {tries} with {waiting} messages waiting and {held} held unacknowledged"
    );
    assert!(waiting > 0, "the kill came in the middle of the messages");
    let _second = celery.herald(&project, &knobs);
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == MESSAGES as i64 && celery.broker_counts().await == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{done} of {MESSAGES} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    celery.each_ran_once(&project, &pool, &ids).await;
}

on_both_brokers!(a_celery_worker_sharing_the_broker_stays_correct);

/// A Celery worker sharing herald's broker on its own queue stays correct.
/// On Redis it shares the same DB and the same `unacked` bookkeeping: the
/// messages it holds unacknowledged for seconds, past herald's
/// `restore_after` (1 s, a sweep every 0.5 s), are left to it, since herald
/// puts back another queue's messages only after the visibility timeout.
/// On RabbitMQ it shares the vhost, and herald's channels never touch its
/// queue. Each of its tasks runs once; its warm shutdown (SIGTERM) puts
/// back exactly what it held, to its own queue, and a second worker runs
/// those. Herald runs each of its 300 messages, sent between Celery's, once
/// throughout. At the end nothing is held and the queues are empty.
async fn a_celery_worker_sharing_the_broker_stays_correct(broker: On) {
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let mut herald = celery.herald(&project, &[("HERALD_CELERY__RESTORE_AFTER", "1s")]);
    let pool = ledger(&project).await;
    let mut first = celery.worker(&project, "first");
    let (mut kept, mut ours) = celery.interleaved(&project, ada, 1);
    // The longest a Celery message was seen held (herald's restore_after
    // is 1 s).
    let mut longest = 0.0_f64;
    celery
        .watch_kept(&mut first, &mut longest, 30, |ran, held, _| {
            ran >= 6 && held > 0
        })
        .await;

    // Warm shutdown of the Celery worker holding messages, while more of
    // both are sent.
    signal(first.0.id(), "TERM");
    let (more_kept, more_ours) = celery.interleaved(&project, ada, 2);
    kept.extend(more_kept);
    ours.extend(more_ours);
    let status = exited(&mut first.0, Duration::from_secs(30)).await;
    assert!(status.success(), "warm shutdown: {status}");
    assert!(
        celery.held_on(KEPT_QUEUE).await.is_empty(),
        "kombu put back what the worker held"
    );
    let ran: i64 = celery.runs().await.values().sum();
    let waiting = celery.waiting(KEPT_QUEUE).await;
    assert_eq!(
        ran as usize + waiting,
        kept.len(),
        "{ran} ran and {waiting} wait in Celery's queue"
    );
    eprintln!("the first Celery worker ran {ran}; {waiting} left to the second");
    assert!(herald.child.try_wait().unwrap().is_none(), "herald runs on");
    // Herald runs all of its messages, the Celery worker gone.
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == ours.len() as i64
            && celery.waiting(&celery.queue).await == 0
            && celery.held_on(&celery.queue).await.is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{done} of herald's {} done",
            ours.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second worker runs what the first put back and the second wave.
    let mut second = celery.worker(&project, "second");
    celery
        .watch_kept(&mut second, &mut longest, 40, |ran, held, waiting| {
            ran == kept.len() && held == 0 && waiting == 0
        })
        .await;
    signal(second.0.id(), "TERM");
    let status = exited(&mut second.0, Duration::from_secs(30)).await;
    assert!(status.success(), "warm shutdown: {status}");

    // Each of Celery's tasks ran once, on Celery.
    let runs = celery.runs().await;
    once_each(&runs);
    let mut ran: Vec<&String> = runs.keys().collect();
    ran.sort_unstable();
    let mut sent: Vec<&String> = kept.iter().collect();
    sent.sort_unstable();
    assert_eq!(ran, sent, "each of Celery's tasks ran");
    if broker == On::Redis {
        eprintln!("Celery's messages were held up to {longest:.2} s");
        assert!(
            longest > 1.5,
            "Celery held a message past herald's restore_after: {longest:.2} s at most"
        );
    }
    // Each of herald's: one job, one row.
    let jobs: Vec<String> =
        sqlx::query_scalar("SELECT dedup_key FROM herald_jobs WHERE state = 'done'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut jobs: Vec<&str> = jobs
        .iter()
        .map(|key| key.trim_start_matches("celery:"))
        .collect();
    jobs.sort_unstable();
    let mut expected: Vec<&str> = ours.iter().map(|(id, _)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(jobs, expected, "one job per herald message, none else");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM herald_jobs").await, 300);
    let stored = rows(&project);
    let mut titles: Vec<&str> = stored
        .values()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    let mut expected: Vec<&str> = ours.iter().map(|(_, title)| title.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(titles, expected, "one row per herald message");
    let ids: Vec<String> = kept
        .iter()
        .cloned()
        .chain(ours.iter().map(|(id, _)| id.clone()))
        .collect();
    let results = celery.results(&project, &ids, 30);
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r["status"] != "SUCCESS")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(celery.bookkeeping().await, (0, 0), "nothing held");
    assert_eq!(celery.waiting(KEPT_QUEUE).await, 0);
    assert_eq!(celery.waiting(&celery.queue).await, 0);
}

on_both_brokers!(celery_beat_runs_overdue_check_once_per_period);

/// `celery beat` sending overdue_check every second lands in herald, and
/// with herald's own scheduler on (every 4 s) the scan runs once per
/// period: the first message of a period claims it (or herald's tick did),
/// the others get a SUCCESS naming who ran it, and record nothing.
async fn celery_beat_runs_overdue_check_once_per_period(broker: On) {
    let (project, [ada, _], _) = project_with_a_task().await;
    let late = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
    project.interop(
        json!({"op": "setup", "tasks": [{"title": "Late", "status": "todo",
        "deadline": late, "assignee": ada}]}),
    );
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let herald = celery.herald(
        &project,
        &[("HERALD_WORKER__OVERDUE_SCHEDULE", "*/4 * * * * *")],
    );
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let schedule = project.dir.path().join("beat-schedule");
    let mut command = project.python(&[
        "-m",
        "celery",
        "-A",
        "celery_app",
        "beat",
        "--max-interval",
        "1",
    ]);
    celery.env(&mut command);
    let mut beat = command
        .arg("-s")
        .arg(&schedule)
        .args(["-l", "warning"])
        .env("INTEROP_BEAT_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("celery beat starts");
    let overdue = to_ada.receive(1).await;
    assert_eq!(overdue[0]["title"], "Task Overdue");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = beat.kill();
    let _ = beat.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    to_ada.silent().await;

    let pool = ledger(&project).await;
    let periods: Vec<(String,)> =
        sqlx::query_as("SELECT claimed_by FROM herald_schedule_runs WHERE name = 'overdue_check'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_beat = periods
        .iter()
        .filter(|(by,)| by.starts_with("celery:"))
        .count();
    let jobs = scalar(
        &pool,
        "SELECT count(*) FROM herald_jobs WHERE kind = 'overdue_check' AND dedup_key LIKE 'celery:%'",
    )
    .await;
    assert!(
        by_beat >= 1,
        "beat's messages ran some periods: {periods:?}"
    );
    assert_eq!(
        jobs, by_beat as i64,
        "one scan job per period a beat message claimed"
    );
    // Every beat message has its result; those beyond one per period say
    // who ran their period.
    let mut conn = celery.redis(1).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("celery-task-meta-*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut skipped = 0;
    for key in &keys {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let meta: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
        if meta["result"]["skipped"] == true {
            skipped += 1;
        }
    }
    assert!(
        keys.len() >= 6,
        "beat sent about one message a second: {}",
        keys.len()
    );
    assert_eq!(
        keys.len(),
        by_beat + skipped,
        "each message ran its period or was skipped"
    );
    assert!(
        skipped >= keys.len() / 2,
        "several messages per period: {skipped} of {}",
        keys.len()
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 1, "one overdue notice: {stored:?}");
}
