//! Bursts faster than the application's consumer reads: thousands of
//! notifications for one user, at channels_redis's default channel capacity
//! (100), reach Django's NotificationConsumer under daphne exactly once each,
//! and herald's sidecar, which may resync from the database, at least once.

use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use serde_json::{Value, json};

use crate::celery::project_with_a_task;
use crate::django::{Arrived, Clients, DjangoProject, http_text, rows, text};

/// What a burst's two sockets got.
pub(crate) struct Delivered {
    /// The Django consumer's notification ids, in arrival order.
    pub(crate) django: Vec<i64>,
    /// Notifications herald's sidecar sent more than once (resyncs).
    pub(crate) sidecar_repeats: usize,
    /// Arrivals on the Django consumer's socket after a higher id.
    pub(crate) descents: usize,
}

/// Checks the burst of `count` reached both sockets: the Django consumer
/// each notification exactly once; herald's sidecar each at least once, its
/// replays whole (`recovered`), counting its repeats (`rest`: what came
/// after the last new one).
///
/// Order: what herald guarantees is its publish order per queue, since a
/// copy held for a full queue is placed before any later copy to it. That
/// is not id order (the worker runs several batches at once, each taking
/// its ids and publishing on its own), and the test cannot see the publish
/// order, so order is measured ([`Delivered::descents`]), not asserted.
///
/// Repeats: a resync whose loss is "since a time" replays every row since
/// then, and the sidecar remembers only its last `replay_limit + 256` sent
/// ids, so under a burst it sends many twice; clients de-duplicate by id.
pub(crate) fn delivered(
    arrivals: &[Arrived; 2],
    rest: &[Vec<Value>; 2],
    count: usize,
) -> Delivered {
    let django: Vec<i64> = ids(&arrivals[1].events);
    let distinct: HashSet<i64> = django.iter().copied().collect();
    assert_eq!(
        (django.len(), distinct.len()),
        (count, count),
        "the Django consumer: every notification once"
    );
    assert_eq!(
        rest[1],
        Vec::<Value>::new(),
        "nothing more on the Django consumer"
    );
    for resumed in &arrivals[0].resumed {
        assert_eq!(resumed["recovered"], true, "a whole replay: {resumed}");
    }
    let mut sidecar = ids(&arrivals[0].events);
    for event in &rest[0] {
        match event["type"].as_str() {
            Some("notification") => sidecar.push(event["data"]["id"].as_i64().unwrap()),
            Some("resumed") => assert_eq!(event["data"]["recovered"], true, "{event}"),
            _ => panic!("herald's sidecar: {event}"),
        }
    }
    let sent: HashSet<i64> = sidecar.iter().copied().collect();
    assert_eq!(sent, distinct, "herald's sidecar: every notification");
    Delivered {
        descents: django.windows(2).filter(|pair| pair[1] < pair[0]).count(),
        sidecar_repeats: sidecar.len() - sent.len(),
        django,
    }
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// Submits `jobs` with `herald enqueue --file -` (one insert per 1,000).
fn enqueue(project: &DjangoProject, jobs: &[Value]) {
    let lines: String = jobs.iter().map(|job| format!("{job}\n")).collect();
    let mut child = project
        .herald(&["enqueue", "--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald enqueue runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// The value of counter `name` on herald's /metrics at `port` (0 if absent).
pub(crate) async fn counter(port: u16, name: &str) -> f64 {
    let (status, body) = http_text(port, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

/// 5,000 notify jobs for one user in one `herald enqueue --file`, while
/// `herald run` works: herald publishes faster than daphne's consumer reads
/// its channel (100 at most), holds what finds it full, and every
/// notification reaches the Django consumer's socket once and herald's
/// sidecar's; none counts as undelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_notifications_reach_the_django_consumer_once_each() {
    const BURST: usize = 5000;
    let (project, [ada, _], _) = project_with_a_task().await;
    let daphne = project.daphne();
    let herald = project.herald_run();
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let jobs: Vec<Value> = (0..BURST)
        .map(|i| {
            let payload = json!({"user_id": ada, "title": format!("b{i}"),
                "message": "burst", "notification_type": "general"});
            json!({"kind": "notify", "payload": payload})
        })
        .collect();
    let started = Instant::now();
    enqueue(&project, &jobs);
    let submitted = started.elapsed();
    let arrivals = to_ada.arrivals(BURST).await;
    let [sidecar_done, django_done] = [&arrivals[0], &arrivals[1]].map(|a| a.last - started);
    let rest = to_ada.rest().await;
    let seen = delivered(&arrivals, &rest, BURST);
    let held = counter(herald.port, "herald_layer_held_total").await;
    let undelivered = counter(herald.port, "herald_layer_undelivered_total").await;
    eprintln!(
        "burst of {BURST}: submitted in {submitted:.1?}; all on the Django consumer after \
         {django_done:.1?} ({} after a higher id), on herald's sidecar after {sidecar_done:.1?} \
         ({} resyncs, {} repeats); {held} copies held, {undelivered} undelivered",
        seen.descents,
        arrivals[0].resumed.len(),
        seen.sidecar_repeats,
    );
    assert!(held > 0.0, "the burst outran the Django consumer");
    assert_eq!(undelivered, 0.0);
    let stored = rows(&project);
    assert_eq!(stored.len(), BURST);
    assert!(
        seen.django.iter().all(|id| stored.contains_key(id)),
        "every id a row"
    );
}
