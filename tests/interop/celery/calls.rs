//! What the application's calls get back: `.delay()` and `apply_async()`
//! run on herald and reach the application's consumer, `get()` returns or
//! raises as under Celery, a countdown runs on time, a burst reaches the
//! consumer once each, protocol 1 reads like protocol 2.

use std::time::Duration;

use serde_json::{Value, json};

use super::On;
use super::harness::*;
use crate::django::*;

on_both_brokers!(celery_calls_run_on_herald_and_get_returns_or_raises);

/// `.delay()` and `apply_async()` of the three event tasks run on herald
/// and reach the application's consumer and herald's sidecar; `get()`
/// returns each job's result; a call herald must not run (arguments that
/// break the kind's schema, a task name it does not know, an expiry in the
/// past, a pickled body) raises what Celery would raise, and writes
/// nothing. A msgpack body runs like a JSON one.
async fn celery_calls_run_on_herald_and_get_returns_or_raises(broker_kind: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker_kind);
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;

    let ids = celery.send(
        &project,
        vec![
            delay(NOTIFY, json!([ada, "Welcome", "Your account is ready."])),
            delay(FILE_ATTACHED, json!([task, 501, "report.pdf", bob])),
            call(
                STATUS_CHANGED,
                "apply_async",
                json!([task, "todo", "review", ada]),
                json!({"reason": "ready"}),
                json!({}),
            ),
            // Wrong types for the kind's schema (Celery's client checks
            // only the number of arguments).
            delay(FILE_ATTACHED, json!(["not-a-task", 502, "x.pdf", bob])),
            // Too many arguments, by name (send_task skips the check).
            call(
                FILE_ATTACHED,
                "send_task",
                json!([task, 1, "f", bob, 9]),
                json!({}),
                json!({}),
            ),
            call(
                "apps.tasks.tasks.archive",
                "send_task",
                json!([task]),
                json!({}),
                json!({}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Expired", "never"]),
                json!({}),
                json!({"expires_in": -60}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Pickled", "never"]),
                json!({}),
                json!({"serializer": "pickle"}),
            ),
            call(
                NOTIFY,
                "apply_async",
                json!([bob, "Packed", "as msgpack"]),
                json!({}),
                json!({"serializer": "msgpack"}),
            ),
        ],
    );
    let results = celery.results(&project, &ids, 30);
    let created_one = json!({"created": 1, "existing": 0});
    for (i, result) in results[..3].iter().enumerate() {
        assert_eq!(result["status"], "SUCCESS", "call {i}: {result}");
        assert_eq!(result["result"], created_one, "call {i}: {result}");
    }
    let raised = |i: usize| (results[i]["status"].clone(), results[i]["error"].clone());
    let (status, error) = raised(3);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("ValueError")),
        "{error}"
    );
    assert_eq!(error["module"], "builtins");
    assert!(
        error["args"][0].as_str().unwrap().contains("task_id"),
        "{error}"
    );
    let (status, error) = raised(4);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("TypeError")),
        "{error}"
    );
    assert!(
        error["args"][0]
            .as_str()
            .unwrap()
            .contains("takes 4 positional arguments but 5"),
        "{error}"
    );
    let (status, error) = raised(5);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("FAILURE"), Some("NotRegistered")),
        "{error}"
    );
    assert_eq!(error["module"], "celery.exceptions");
    let (status, error) = raised(6);
    assert_eq!(
        (status.as_str(), error["type"].as_str()),
        (Some("REVOKED"), Some("TaskRevokedError")),
        "{error}"
    );
    let (status, error) = raised(7);
    assert_eq!(status, "FAILURE", "{error}");
    assert!(
        error["args"][0]
            .as_str()
            .unwrap()
            .contains("pickle is refused"),
        "{error}"
    );
    assert_eq!(
        results[8]["result"], created_one,
        "msgpack runs: {}",
        results[8]
    );

    // The four that ran, on both servers, as the application's rows.
    let ada_got = to_ada.receive(2).await;
    let mut bob_got = to_bob.receive(2).await;
    to_ada.silent().await;
    to_bob.silent().await;
    let mut titles: Vec<&str> = ada_got
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["File Attached", "Welcome"]);
    // receive() orders by id; the two went through different batches.
    bob_got.sort_by_key(|e| e["title"].as_str().map(str::to_string));
    assert_eq!(bob_got[0]["title"], "Packed");
    assert_eq!(bob_got[1]["title"], "Task Status Changed");
    assert!(
        bob_got[1]["message"]
            .as_str()
            .unwrap()
            .ends_with("Reason: ready")
    );
    let welcome = ada_got.iter().find(|e| e["title"] == "Welcome").unwrap();
    assert_eq!(
        welcome["notification_type"], "general",
        "the task's default"
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 4, "nothing of the refused calls: {stored:?}");

    // The job answers to its Celery id; the refused calls recorded none.
    let (status, job) = http(herald.port, "GET", &format!("/api/jobs/{}", ids[0]), "").await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("notify"), Some("done"))
    );
    assert_eq!(job["dedup_key"], format!("celery:{}", ids[0]));
    for id in &ids[3..8] {
        let (status, _) = http(herald.port, "GET", &format!("/api/jobs/{id}"), "").await;
        assert_eq!(status, 404, "call {id} recorded nothing");
    }
    assert_eq!(
        celery.broker_counts().await,
        (0, 0),
        "every message acknowledged"
    );

    // The dashboard's figures name the broker and read herald's queue:
    // empty, and on RabbitMQ consumed by each of the two loops.
    let broker = broker_stats(herald.port, |b| b["loops"] == 2).await;
    let (kind, consumers) = match broker_kind {
        On::Redis => ("redis", Value::Null),
        On::RabbitMq => ("amqp", json!(2)),
    };
    assert_eq!(broker["kind"], kind, "{broker}");
    assert_eq!(broker["reachable"], true, "{broker}");
    let queue = json!([{"name": celery.queue, "waiting": 0, "consumers": consumers}]);
    assert_eq!(broker["queues"], queue, "{broker}");
    if broker_kind == On::RabbitMq {
        assert_eq!(broker["connected"], 2, "both loops connected: {broker}");
    }
}

on_both_brokers!(a_countdown_waits_in_the_ledger_and_runs_once_on_time);

/// `apply_async(countdown=4)` runs at its time, not before and soon after;
/// the wait lives in herald's ledger: the message is acknowledged at once,
/// so a visibility timeout far shorter than the countdown sends nothing
/// back and the task runs once.
async fn a_countdown_waits_in_the_ledger_and_runs_once_on_time(broker: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let short = [
        ("HERALD_CELERY__VISIBILITY_TIMEOUT", "1s"),
        ("HERALD_CELERY__RESTORE_AFTER", "1s"),
    ];
    let herald = celery.herald(&project, &short);
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;
    let ids = celery.send(
        &project,
        vec![call(
            STATUS_CHANGED,
            "apply_async",
            json!([task, "todo", "done", ada]),
            json!({}),
            json!({"countdown": 4}),
        )],
    );
    // Recorded, acknowledged, waiting for its time in the ledger.
    let job = loop {
        let (status, job) = http(herald.port, "GET", &format!("/api/jobs/{}", ids[0]), "").await;
        if status == 200 {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "queued");
    assert_eq!(
        celery.broker_counts().await,
        (0, 0),
        "acknowledged before it runs"
    );
    // The ledger's run_at is the eta rounded up to its second.
    let run_at: chrono::DateTime<chrono::Utc> = job["run_at"].as_str().unwrap().parse().unwrap();
    let event = to_bob.receive(1).await;
    let arrived = chrono::Utc::now();
    assert!(
        arrived >= run_at,
        "ran at {arrived}, before its countdown ended at {run_at}"
    );
    let late = (arrived - run_at).to_std().unwrap();
    assert!(late < Duration::from_secs(3), "ran {late:?} after its time");
    assert_eq!(event[0]["title"], "Task Status Changed");
    // Past several visibility timeouts: nothing comes back, nothing runs twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    to_bob.silent().await;
    assert_eq!(rows(&project).len(), 1);
    let results = celery.results(&project, &ids, 10);
    assert_eq!(results[0]["status"], "SUCCESS", "{results:?}");
}

on_both_brokers!(three_hundred_delays_reach_the_django_consumer_once_each);

/// 300 `.delay()` calls at channels_redis's default capacity (100), which
/// daphne's consumer reads slower than herald publishes: each notification
/// reaches the application's consumer exactly once and herald's sidecar
/// (see [`crate::bursts::delivered`], also for order), and the table has
/// 300 rows.
async fn three_hundred_delays_reach_the_django_consumer_once_each(broker: On) {
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let mut to_ada = Clients::open(herald.port, daphne.port, ada).await;
    let calls = (0..300)
        .map(|i| delay(NOTIFY, json!([ada, format!("n{i}"), "from .delay()"])))
        .collect();
    let ids = celery.send(&project, calls);
    let arrivals = to_ada.arrivals(300).await;
    let rest = to_ada.rest().await;
    let seen = crate::bursts::delivered(&arrivals, &rest, 300);
    let held = crate::bursts::counter(herald.port, "herald_layer_held_total").await;
    eprintln!(
        "300 delays: {held} copies held; on the Django consumer {} after a higher id; \
         herald's sidecar {} resyncs, {} repeats",
        seen.descents,
        arrivals[0].resumed.len(),
        seen.sidecar_repeats
    );
    let stored = rows(&project);
    assert_eq!(stored.len(), 300);
    assert!(
        seen.django.iter().all(|id| stored.contains_key(id)),
        "every id a row"
    );
    let results = celery.results(&project, &ids, 30);
    assert!(
        results.iter().all(|r| r["status"] == "SUCCESS"),
        "{results:?}"
    );
}

on_both_brokers!(protocol_1_calls_run_on_herald_worker_and_reach_the_sidecar);

/// Messages in Celery's task protocol 1, as the real celery package writes
/// them with `task_protocol = 1` (the body a dict naming the task), taken
/// by `herald worker`'s ingress (not `herald run`'s), reach the application's
/// consumer and a client of `herald sidecar`, and `get()` returns.
async fn protocol_1_calls_run_on_herald_worker_and_reach_the_sidecar(broker: On) {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let daphne = project.daphne();
    let (_worker, sidecar) = celery.herald_apart(&project);
    let mut to_ada = Clients::open(sidecar.port, daphne.port, ada).await;
    let ids = celery.send_in(
        &project,
        1,
        vec![
            delay(NOTIFY, json!([ada, "Protocol one", "from a v1 body"])),
            call(
                FILE_ATTACHED,
                "apply_async",
                json!([task, 601]),
                json!({"file_name": "v1.pdf", "uploaded_by": bob}),
                json!({}),
            ),
        ],
    );
    let results = celery.results(&project, &ids, 30);
    let created_one = json!({"created": 1, "existing": 0});
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["status"], "SUCCESS", "call {i}: {result}");
        assert_eq!(result["result"], created_one, "call {i}: {result}");
    }
    let events = to_ada.receive(2).await;
    let titles: Vec<&str> = events.iter().filter_map(|e| e["title"].as_str()).collect();
    assert!(titles.contains(&"Protocol one"), "{events:?}");
    assert_eq!(
        events.len(),
        2,
        "the notify and the file for the assignee: {events:?}"
    );
    to_ada.silent().await;
    assert_eq!(rows(&project).len(), 2, "one row per call");
}

on_both_brokers!(a_call_that_ignores_its_result_runs_and_writes_none);

/// `apply_async(ignore_result=True)` (the header Celery sends for it, as for
/// `@shared_task(ignore_result=True)`): the job runs, and no result is
/// written, nor the failure of such a call herald refuses; the same call
/// without it gets its result.
async fn a_call_that_ignores_its_result_runs_and_writes_none(broker: On) {
    let (project, [ada, bob], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let _herald = celery.herald(&project, &[]);
    let ignoring = json!({"ignore_result": true});
    let ids = celery.send(
        &project,
        vec![
            delay(NOTIFY, json!([ada, "Answered", "a result"])),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Unanswered", "none"]),
                json!({}),
                ignoring.clone(),
            ),
            call(
                FILE_ATTACHED,
                "apply_async",
                json!(["not-a-task", 502, "x.pdf", bob]),
                json!({}),
                ignoring,
            ),
        ],
    );
    let answered = celery.results(&project, &ids[..1], 20);
    assert_eq!(answered[0]["status"], "SUCCESS", "{}", answered[0]);
    let started = std::time::Instant::now();
    while rows(&project).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ignoring call never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unanswered = celery.results(&project, &ids[1..], 2);
    for result in &unanswered {
        assert_eq!(result["status"], "PENDING", "no result written: {result}");
        assert_eq!(result["error"]["type"], "TimeoutError", "{result}");
    }
}
