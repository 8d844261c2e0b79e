//! Scheduled scans: a period's scan runs once across worker processes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use herald::config::Settings;
use herald::jobs::JobContext;
use herald::layer::MemoryLayer;
use herald::publish::outbox::Publisher;
use herald::store::NewTask;
use herald::worker::scheduler::{Schedule, parse_cron, period_of, schedules, start, tick};

use crate::helpers::{TestStore, on_both_databases};

fn context(db: &TestStore) -> JobContext {
    let layer = Arc::new(MemoryLayer::new(&Settings::defaults().layer).unwrap());
    let worker = Settings::defaults().worker;
    JobContext {
        store: db.store.clone(),
        publisher: Publisher::new(db.store.clone(), layer),
        reminder_offsets: worker.reminder_offsets,
        closed_statuses: worker.closed_statuses,
        notification_types: worker.notification_types,
        job_id: String::new(),
    }
}

fn every_second() -> Vec<Schedule> {
    let mut worker = Settings::defaults().worker;
    worker.overdue_schedule = "* * * * * *".into();
    worker.deadline_reminder_schedule = "* * * * * *".into();
    schedules(&worker).unwrap()
}

#[test]
fn period_is_the_cron_time_a_tick_belongs_to() {
    let cron = parse_cron("0 */5 * * * *").unwrap();
    let at = |s: &str| s.parse::<chrono::DateTime<Utc>>().unwrap();
    assert_eq!(
        period_of(&cron, at("2026-11-26T10:05:00.300Z")),
        Some(at("2026-11-26T10:05:00Z"))
    );
    assert_eq!(
        period_of(&cron, at("2026-11-26T10:04:59.200Z")),
        Some(at("2026-11-26T10:05:00Z")),
        "early ticks"
    );
    assert_eq!(
        period_of(&cron, at("2026-11-26T10:07:00Z")),
        Some(at("2026-11-26T10:05:00Z"))
    );
    assert!(parse_cron("every five minutes").is_err());
    assert!(
        parse_cron("*/5 * * * *").is_err(),
        "five fields: seconds are required"
    );
}

on_both_databases!(two_workers_run_a_period_once, two_workers_body);
async fn two_workers_body(db: TestStore) {
    db.store
        .create_task(&NewTask {
            title: "Late".into(),
            status: "open".into(),
            deadline: Some(Utc::now() - TimeDelta::hours(1)),
            assignee_id: Some(1),
            created_by_id: None,
        })
        .await
        .unwrap();
    let overdue = every_second()
        .into_iter()
        .find(|s| s.name == "overdue_check")
        .unwrap();
    let now = Utc::now();
    let (a, b) = (context(&db), context(&db));
    let (ran_a, ran_b) = tokio::join!(
        tick(&overdue, &a, "worker-a", now),
        tick(&overdue, &b, "worker-b", now)
    );
    assert_eq!(
        [ran_a.unwrap(), ran_b.unwrap()]
            .iter()
            .filter(|r| **r)
            .count(),
        1,
        "exactly one ran"
    );
    assert_eq!(
        db.store
            .list_notifications_after(1, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(db.store.claimed_periods("overdue_check").await.unwrap(), 1);
}

// Two real schedulers firing every second for a few seconds: every period
// is claimed once, and each claimed period ran on one of them.
on_both_databases!(two_schedulers_share_the_periods, schedulers_body);
async fn schedulers_body(db: TestStore) {
    let mut first = start(every_second(), context(&db), "worker-a".into())
        .await
        .unwrap();
    let mut second = start(every_second(), context(&db), "worker-b".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    let periods = db.store.claimed_periods("overdue_check").await.unwrap();
    assert!(
        (2..=5).contains(&periods),
        "one claim per second: {periods}"
    );
}
