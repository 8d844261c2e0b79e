//! Celery's remote control against herald, from the real celery package:
//! `AsyncResult.revoke()` and `celery control revoke` on countdowns that
//! herald holds in its ledger, honoured by every herald process and across
//! their restart (Celery's worker forgets its revokes on restart), and
//! `celery inspect` answered as a worker node, on both brokers.

use std::time::{Duration, Instant};

use serde_json::json;

use super::On;
use super::harness::*;
use crate::django::*;

on_both_brokers!(a_revoked_countdown_never_runs_across_a_restart_of_two_heralds);

/// Two herald processes hold four countdowns of 10 s. One is revoked by
/// `AsyncResult.revoke()` once in the ledger, one through herald's own
/// `POST /api/celery/revoke`; one was revoked by the CLI (`celery control
/// revoke <id>`) before its message was even sent. All three are REVOKED
/// at once, and both herald processes are then killed and
/// started again before the countdowns' time. Past it, only the third has
/// run: no row of the revoked ones, and `celery inspect revoked` lists
/// them.
async fn a_revoked_countdown_never_runs_across_a_restart_of_two_heralds(broker: On) {
    const COUNTDOWN: i64 = 10;
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let first = celery.herald(&project, &[]);
    let second = celery.herald(&project, &[]);
    let pool = ledger(&project).await;
    nodes_answer(&celery, &project, 2).await;
    let early = uuid::Uuid::new_v4().to_string();
    let (status, printed) = celery.cli(&project, &["control", "revoke", &early]);
    assert!(status.success(), "{printed}");
    let countdown = |title: &str, id: Option<&str>| {
        call(
            NOTIFY,
            "apply_async",
            json!([ada, title, "a countdown"]),
            json!({}),
            json!({"countdown": COUNTDOWN, "task_id": id}),
        )
    };
    let sent = chrono::Utc::now();
    let ids = celery.send(
        &project,
        vec![
            countdown("Kept", None),
            countdown("Revoked", None),
            countdown("Revoked before it was sent", Some(&early)),
            countdown("Revoked through herald's API", None),
        ],
    );
    let started = Instant::now();
    while scalar(&pool, "SELECT count(*) FROM herald_jobs").await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, printed) = celery.cli(&project, &["inspect", "scheduled", "--timeout", "3"]);
    assert!(status.success(), "{printed}");
    assert!(
        printed.contains(&ids[0]) && printed.contains(&ids[1]) && printed.contains(NOTIFY),
        "inspect scheduled lists the countdowns in the ledger: {printed}"
    );
    celery.revoke(&project, &ids[1..2]);
    let body = json!({"task_ids": [ids[3]]}).to_string();
    let (status, answer) = http(first.port, "POST", "/api/celery/revoke", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelled"], json!([ids[3]]), "{answer}");
    let (status, answer) = http(
        first.port,
        "POST",
        "/api/celery/revoke",
        "{\"task_ids\": []}",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("task_ids"),
        "{answer}"
    );
    let revoked = celery.results(&project, &ids[1..], 10);
    for result in &revoked {
        assert_eq!(result["status"], "REVOKED", "{result}");
        assert_eq!(result["error"]["type"], "TaskRevokedError", "{result}");
    }
    let state: String = sqlx::query_scalar("SELECT state FROM herald_jobs WHERE dedup_key = $1")
        .bind(format!("celery:{}", ids[1]))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "cancelled", "the revoked countdown's job");
    // Every herald process killed and started again before the time.
    drop((first, second));
    let _first = celery.herald(&project, &[]);
    let _second = celery.herald(&project, &[]);
    let due = sent + chrono::TimeDelta::seconds(COUNTDOWN + 3);
    let started = Instant::now();
    while chrono::Utc::now() < due || rows(&project).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the kept one never ran"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let titles: Vec<String> = rows(&project)
        .values()
        .map(|row| row["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["Kept"], "the revoked countdowns never ran");
    let kept = celery.results(&project, &ids[..1], 10);
    assert_eq!(kept[0]["status"], "SUCCESS", "{}", kept[0]);
    let (status, printed) = celery.cli(&project, &["inspect", "revoked", "--timeout", "3"]);
    assert!(status.success(), "{printed}");
    assert!(
        printed.contains(&ids[1]) && printed.contains(&early),
        "inspect revoked lists both, from the database: {printed}"
    );
}

on_both_brokers!(celery_inspect_and_control_answer_as_a_worker_node);

/// `celery inspect` and `celery control` from the real CLI: herald's node
/// (named by `celery.hostname`) answers ping, registered (the tasks of
/// `[celery.tasks]`), active_queues (herald's queue) and stats; `control
/// shutdown` is answered "not supported by herald" and herald runs on; a
/// destination that is not herald gets nothing from it.
async fn celery_inspect_and_control_answer_as_a_worker_node(broker: On) {
    let (project, _, _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let mut herald = celery.herald(&project, &[("HERALD_CELERY__HOSTNAME", "herald@web1")]);
    nodes_answer(&celery, &project, 1).await;
    let inspect = |args: &[&str]| {
        let mut all = vec!["inspect"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--timeout", "3", "-d", "herald@web1"]);
        let (status, printed) = celery.cli(&project, &all);
        assert!(status.success(), "inspect {args:?}: {printed}");
        printed
    };
    assert!(inspect(&["ping"]).contains("herald@web1: OK"));
    let registered = inspect(&["registered"]);
    assert!(registered.contains(NOTIFY), "{registered}");
    assert!(registered.contains(FILE_ATTACHED), "{registered}");
    let queues = inspect(&["active_queues"]);
    assert!(queues.contains(&celery.queue), "{queues}");
    let stats = inspect(&["stats"]);
    assert!(
        stats.contains("\"pid\"") && stats.contains("max-concurrency"),
        "{stats}"
    );
    let (status, printed) = celery.cli(
        &project,
        &["control", "shutdown", "--timeout", "3", "-d", "herald@web1"],
    );
    assert!(status.success(), "{printed}");
    assert!(printed.contains("not supported by herald"), "{printed}");
    let (status, printed) = celery.cli(
        &project,
        &[
            "inspect",
            "ping",
            "--timeout",
            "1",
            "-d",
            "celery@elsewhere",
        ],
    );
    assert!(
        !status.success(),
        "no node but herald, which is not asked: {printed}"
    );
    assert!(
        herald.child.try_wait().unwrap().is_none(),
        "herald did not obey shutdown"
    );
}

on_both_brokers!(flower_shows_herald_online_with_its_queues_and_then_gone);

/// The real Flower on the application's broker: herald's worker events put
/// its node in Flower's list, online; Flower's inspector (its `/api/workers`
/// refresh, as its worker page asks) gets herald's queues, tasks and stats;
/// herald killed, Flower counts the node offline once heartbeats stop.
async fn flower_shows_herald_online_with_its_queues_and_then_gone(broker: On) {
    let (project, _, _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let herald = celery.herald(&project, &[("HERALD_CELERY__HOSTNAME", "herald@web1")]);
    let flower = celery.flower(&project, free_port());
    let online = |want: bool| {
        let port = flower.port;
        async move {
            let started = Instant::now();
            loop {
                let (status, workers) = http(port, "GET", "/api/workers?status=1", "").await;
                if status == 200 && workers["herald@web1"] == want {
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "Flower never counted herald {}: {status} {workers}",
                    if want { "online" } else { "offline" }
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    online(true).await;
    let (status, workers) = http(
        flower.port,
        "GET",
        "/api/workers?refresh=1&workername=herald@web1",
        "",
    )
    .await;
    assert_eq!(status, 200, "{workers}");
    let node = &workers["herald@web1"];
    assert_eq!(
        node["active_queues"][0]["name"],
        celery.queue.as_str(),
        "{node}"
    );
    let registered = node["registered"].as_array().expect("registered");
    assert!(registered.iter().any(|t| t == NOTIFY), "{node}");
    assert!(node["stats"]["pid"].as_u64().is_some(), "{node}");
    drop(herald);
    online(false).await;
}

on_both_brokers!(flower_shows_the_tasks_herald_ran_with_their_states);

/// Task events, turned on by `celery control enable_events` (what Flower
/// sends): the real Flower's task list shows what herald did with each
/// call: SUCCESS for a run (with its result and runtime), FAILURE for
/// arguments that break the kind's schema, REVOKED for a revoked countdown.
async fn flower_shows_the_tasks_herald_ran_with_their_states(broker: On) {
    let (project, [ada, bob], _) = project_with_a_task().await;
    let celery = Celery::on(broker);
    let _herald = celery.herald(&project, &[("HERALD_CELERY__HOSTNAME", "herald@web1")]);
    let flower = celery.flower(&project, free_port());
    nodes_answer(&celery, &project, 1).await;
    let (status, printed) = celery.cli(
        &project,
        &[
            "control",
            "enable_events",
            "--timeout",
            "3",
            "-d",
            "herald@web1",
        ],
    );
    assert!(status.success(), "{printed}");
    assert!(printed.contains("task events"), "{printed}");
    let ids = celery.send(
        &project,
        vec![
            delay(NOTIFY, json!([ada, "Seen by Flower", "a run"])),
            delay(FILE_ATTACHED, json!(["not-a-task", 502, "x.pdf", bob])),
            call(
                NOTIFY,
                "apply_async",
                json!([ada, "Never", "revoked"]),
                json!({}),
                json!({"countdown": 60}),
            ),
        ],
    );
    let results = celery.results(&project, &ids[..2], 20);
    assert_eq!(results[0]["status"], "SUCCESS", "{}", results[0]);
    celery.revoke(&project, &ids[2..]);
    let want = [(0, "SUCCESS"), (1, "FAILURE"), (2, "REVOKED")];
    let started = Instant::now();
    loop {
        let (status, tasks) = http(flower.port, "GET", "/api/tasks", "").await;
        let states: Vec<String> = want
            .iter()
            .map(|(i, _)| tasks[&ids[*i]]["state"].as_str().unwrap_or("-").to_string())
            .collect();
        if status == 200 && want.iter().zip(&states).all(|((_, w), s)| w == s) {
            let run = &tasks[&ids[0]];
            assert_eq!(run["name"], NOTIFY, "{run}");
            assert_eq!(run["worker"], "herald@web1", "{run}");
            assert!(
                run["result"]
                    .as_str()
                    .unwrap_or("")
                    .contains("'created': 1"),
                "{run}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Flower's task states {states:?}, wanted {want:?}: {status} {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `celery inspect ping` hears `n` herald nodes.
async fn nodes_answer(celery: &Celery, project: &DjangoProject, n: usize) {
    let started = Instant::now();
    loop {
        let (_, printed) = celery.cli(project, &["inspect", "ping", "--timeout", "2"]);
        let pongs = printed.matches(": OK").count();
        if pongs >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{pongs} of {n} herald nodes answer ping: {printed}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
