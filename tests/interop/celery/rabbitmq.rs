//! What only RabbitMQ has: its `consumer_timeout` (which herald never
//! meets), its faults (a cut connection, a node restart), Celery's rpc://
//! result backend, and quorum queues with native delayed delivery.

use std::time::{Duration, Instant};

use serde_json::json;

use super::On;
use super::harness::*;
use crate::django::*;

/// RabbitMQ's `consumer_timeout` (celery#6760, #6954) on a private node
/// with a 5 s timeout, checked every second: a countdown of 30 s sent to
/// the Celery worker's queue is held unacknowledged in its memory until the
/// node closes its channel with PRECONDITION_FAILED; the same countdown
/// sent to herald's queue is in herald's ledger, acknowledged at once, and
/// runs once at its time, herald's connection never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_past_rabbitmqs_consumer_timeout_runs_on_herald_and_breaks_celery() {
    const COUNTDOWN: i64 = 30;
    let node = crate::rabbit::RabbitNode::start(
        "consumer_timeout = 5000",
        "{channel_tick_interval, 1000}",
    );
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::at(node.url());
    let daphne = project.daphne();
    let herald = celery.herald(&project, &[]);
    let _worker = celery.worker(&project, "timeout");
    let mut to_bob = Clients::open(herald.port, daphne.port, bob).await;
    let sent = chrono::Utc::now();
    let ids = celery.send(
        &project,
        vec![
            call(
                STATUS_CHANGED,
                "apply_async",
                json!([task, "todo", "done", ada]),
                json!({}),
                json!({"countdown": COUNTDOWN}),
            ),
            call(
                REINDEX,
                "apply_async",
                json!([WORK]),
                json!({}),
                json!({"countdown": COUNTDOWN}),
            ),
        ],
    );
    // Celery's worker loses its channel while it holds the countdown.
    let started = Instant::now();
    while !node.log().contains("timed out") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the node never timed out the Celery worker's delivery:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the node closed the Celery worker's channel after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Herald's runs at its time, once.
    let event = to_bob.receive(1).await;
    let ran = chrono::Utc::now();
    assert_eq!(event[0]["title"], "Task Status Changed");
    assert!(
        ran >= sent + chrono::TimeDelta::seconds(COUNTDOWN),
        "ran at {ran}, before its countdown from {sent}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    to_bob.silent().await;
    assert_eq!(rows(&project).len(), 1, "ran once");
    let results = celery.results(&project, &ids[..1], 10);
    assert_eq!(results[0]["status"], "SUCCESS", "{results:?}");
    let reconnects =
        crate::bursts::counter(herald.port, "herald_celery_broker_reconnects_total").await;
    assert_eq!(reconnects, 0.0, "herald's connection was never closed");
    let timeouts = node
        .log()
        .lines()
        .filter(|line| line.contains("timed out"))
        .count();
    eprintln!("consumer timeouts in the node's log (the Celery worker's): {timeouts}");
}

/// Faults of the AMQP broker in the middle of 3,000 messages taken one at
/// a time (so the faults find most of them still to take), on a private
/// node: every connection cut (`rabbitmqctl close_all_connections`), then
/// the node restarted (`rabbitmqctl stop` and a start on the same data).
/// Herald connects again each time (its reconnect counter says so), and
/// every message runs once (one job, one row, no title twice) with its
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_and_a_rabbitmq_restart_lose_nothing_and_repeat_nothing() {
    const MESSAGES: usize = 3000;
    let mut node = crate::rabbit::RabbitNode::start("", "");
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::at(node.url());
    let calls = (0..MESSAGES)
        .map(|i| delay(NOTIFY, json!([ada, format!("r{i}"), "once"])))
        .collect();
    let ids = celery.send(&project, calls);
    let knobs = [
        ("HERALD_CELERY__BATCH_SIZE", "1"),
        ("HERALD_CELERY__CONCURRENCY", "1"),
    ];
    let pool = ledger(&project).await;
    let herald = celery.herald(&project, &knobs);
    let jobs_reach = |n: i64| {
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            while scalar(&pool, "SELECT count(*) FROM herald_jobs").await < n {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "fewer than {n} jobs"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    jobs_reach(300).await;
    node.ctl(&["close_all_connections", "herald test: connection cut"]);
    let cut_at = scalar(&pool, "SELECT count(*) FROM herald_jobs").await;
    jobs_reach(cut_at + 300).await;
    node.restart();
    let restarted_at = scalar(&pool, "SELECT count(*) FROM herald_jobs").await;
    eprintln!("cut at {cut_at} jobs, restarted at {restarted_at} of {MESSAGES}");
    assert!(
        restarted_at < MESSAGES as i64,
        "the restart came in the middle of the messages"
    );
    let started = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM herald_jobs WHERE state = 'done'",
        )
        .await;
        if done == MESSAGES as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{done} of {MESSAGES} done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reconnects =
        crate::bursts::counter(herald.port, "herald_celery_broker_reconnects_total").await;
    assert!(
        reconnects >= 2.0,
        "herald connected again after each fault: {reconnects}"
    );
    // The dashboard says so too: connected again, and how often.
    let broker = broker_stats(herald.port, |b| b["connected"] == 1).await;
    assert_eq!(
        (broker["kind"].as_str(), broker["loops"].as_u64()),
        (Some("amqp"), Some(1))
    );
    assert!(
        broker["reconnects"].as_u64() >= Some(2),
        "reconnects on the dashboard: {broker}"
    );
    assert_eq!(broker["queues"][0]["waiting"], 0, "{broker}");
    celery.each_ran_once(&project, &pool, &ids).await;
}

/// Celery's rpc:// result backend on a deployment with nothing but RabbitMQ
/// (and the database): the caller's `get()` returns a job's result, raises
/// what Celery raises for a call herald refuses (a schema error, a task
/// name it does not know), and returns the result of a countdown whose
/// herald was killed (-9) and started again between the message and its
/// time: the caller's reply queue waited in herald's store, which is empty
/// again once every result went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_results_reach_the_caller_with_nothing_but_rabbitmq() {
    let (project, [ada, bob], task) = project_with_a_task().await;
    let celery = Celery::on(On::RabbitMq).rpc();
    let herald = celery.herald(&project, &[]);
    let calls = vec![
        delay(NOTIFY, json!([ada, "Over rpc", "a result message"])),
        delay(FILE_ATTACHED, json!(["not-a-task", 502, "x.pdf", bob])),
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
            json!([ada, "Later", "after a restart"]),
            json!({}),
            json!({"countdown": 8}),
        ),
    ];
    let pool = ledger(&project).await;
    // The caller waits for its results in a thread of its own while herald
    // is killed and started again.
    let (results, _herald) = std::thread::scope(|scope| {
        let caller = scope.spawn(|| celery.send_and_get(&project, calls, 60));
        std::thread::sleep(Duration::from_secs(4));
        drop(herald);
        let herald = celery.herald(&project, &[]);
        (caller.join().expect("the caller ends").1, herald)
    });
    let created_one = json!({"created": 1, "existing": 0});
    assert_eq!(results[0]["status"], "SUCCESS", "{}", results[0]);
    assert_eq!(results[0]["result"], created_one);
    assert_eq!(results[1]["status"], "FAILURE", "{}", results[1]);
    assert_eq!(results[1]["error"]["type"], "ValueError");
    assert_eq!(results[2]["status"], "FAILURE", "{}", results[2]);
    assert_eq!(results[2]["error"]["type"], "NotRegistered");
    assert_eq!(results[3]["status"], "SUCCESS", "{}", results[3]);
    assert_eq!(results[3]["result"], created_one);
    let titles: Vec<String> = rows(&project)
        .values()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    let left = scalar(&pool, "SELECT count(*) FROM herald_celery_replies").await;
    assert_eq!(left, 0, "every reply queue forgotten once answered");
}

/// Quorum queues with topic exchanges, as a RabbitMQ deployment of Celery
/// 5.5+ runs them: the application's countdown does not go to herald's
/// queue but into kombu's native delayed delivery (`celery_delayed_27` ..
/// `_0`, a message TTL per bit of the delay), which the real Celery
/// worker's DelayedDelivery bootstep declared first, and which herald
/// declares again identically (RabbitMQ would refuse a different one) and
/// binds its queue to. The message waits on the broker, not in herald, and
/// reaches herald's queue at its time; it runs once, and the Celery worker
/// is still up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_to_a_quorum_queue_comes_by_native_delayed_delivery() {
    const COUNTDOWN: i64 = 6;
    let (project, [ada, _], _) = project_with_a_task().await;
    let celery = Celery::on(On::RabbitMq)
        .with("CELERY_TASK_DEFAULT_QUEUE_TYPE", "quorum")
        .with("CELERY_TASK_CREATE_MISSING_QUEUE_TYPE", "quorum")
        .with("CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE", "topic");
    let vhost = celery.amqp.as_ref().expect("a vhost");
    let mut worker = celery.worker(&project, "delayed");
    let started = Instant::now();
    while !vhost
        .exchanges()
        .iter()
        .any(|name| name == "celery_delayed_0")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the Celery worker never declared the delayed-delivery ladder"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _herald = celery.herald(&project, &[]);
    let pool = ledger(&project).await;
    let sent = chrono::Utc::now();
    let ids = celery.send(
        &project,
        vec![call(
            NOTIFY,
            "apply_async",
            json!([ada, "Delayed", "by the broker"]),
            json!({}),
            json!({"countdown": COUNTDOWN}),
        )],
    );
    // A message sent straight to herald's queue is recorded within a
    // round; this one waits on the broker. (RabbitMQ's counts of a quorum
    // queue lag by seconds, so the ladder's own are no witness.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recorded = scalar(&pool, "SELECT count(*) FROM herald_jobs").await;
    assert_eq!(recorded, 0, "herald has not seen it yet");
    let started = Instant::now();
    while rows(&project).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the countdown never reached herald"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ran = chrono::Utc::now();
    assert!(
        ran >= sent + chrono::TimeDelta::seconds(COUNTDOWN),
        "ran at {ran}, before its countdown from {sent}"
    );
    let results = celery.results(&project, &ids, 10);
    assert_eq!(results[0]["status"], "SUCCESS", "{results:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rows(&project).len(), 1, "ran once");
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the Celery worker is still running"
    );
}

/// Messages herald cannot read, published raw to herald's queue beside a
/// real `.delay()`: a body that is not JSON and a message without headers
/// (neither has a task id, so no result can answer them) are set aside
/// once and never redelivered; a pickled message with a task id gets its
/// FAILURE result. Without a dead-letter exchange they are copied to
/// herald's `herald.rejected` with the reason in `x-herald-reason`; with
/// one (`celery.queue_dead_letter_exchange`, declared on herald's queue)
/// they are rejected without requeue, and RabbitMQ dead-letters them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_are_set_aside_once_and_never_redelivered() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions};
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use lapin::{BasicProperties, ConnectionProperties, ExchangeKind};

    let (project, [ada, _], _) = project_with_a_task().await;
    for dead_letter in [None, Some("app.dead-letters")] {
        let mut celery = Celery::on(On::RabbitMq);
        if let Some(exchange) = dead_letter {
            // The application lists herald's queue in CELERY_TASK_QUEUES
            // with its dead-letter exchange.
            celery = celery.with("INTEROP_CELERY_DEAD_LETTER_EXCHANGE", exchange);
        }
        let vhost = celery.amqp.as_ref().expect("a vhost");
        let connection = lapin::Connection::connect(&vhost.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let none = FieldTable::default;
        // The application's dead-letter exchange and the queue it keeps
        // dead letters in.
        if let Some(exchange) = dead_letter {
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(exchange.into(), ExchangeKind::Fanout, options, none())
                .await
                .unwrap();
            channel
                .queue_declare("dead".into(), durable, none())
                .await
                .unwrap();
            channel
                .queue_bind(
                    "dead".into(),
                    exchange.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    none(),
                )
                .await
                .unwrap();
        }
        let knobs: Vec<(&str, &str)> = dead_letter
            .map(|exchange| ("HERALD_CELERY__QUEUE_DEAD_LETTER_EXCHANGE", exchange))
            .into_iter()
            .collect();
        let herald = celery.herald(&project, &knobs);
        let started = Instant::now();
        while !vhost.queues().contains_key(&celery.queue) {
            assert!(started.elapsed() < Duration::from_secs(30), "no queue");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let publish = |body: &'static [u8], properties: BasicProperties| {
            let channel = channel.clone();
            let queue = celery.queue.clone();
            async move {
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        properties,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        };
        let json = || {
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
        };
        publish(b"{not json", json()).await;
        publish(b"[[], {}, {}]", json()).await;
        let pickled = uuid::Uuid::new_v4().to_string();
        let mut headers = FieldTable::default();
        for (key, value) in [("id", pickled.as_str()), ("task", NOTIFY), ("lang", "py")] {
            headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
        }
        let pickle = BasicProperties::default()
            .with_content_type("application/x-python-serialize".into())
            .with_content_encoding("binary".into())
            .with_headers(headers);
        publish(
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
            pickle,
        )
        .await;
        let ids = celery.send(
            &project,
            vec![delay(NOTIFY, json!([ada, "Readable", "runs"]))],
        );
        let results = celery.results(&project, &[pickled, ids[0].clone()], 30);
        assert_eq!(results[0]["status"], "FAILURE", "{}", results[0]);
        assert!(
            results[0]["error"]["args"][0]
                .as_str()
                .unwrap()
                .contains("pickle is refused"),
            "{}",
            results[0]
        );
        assert_eq!(results[1]["status"], "SUCCESS", "{}", results[1]);
        // Kept where they were set aside, once, and not redelivered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let queues = vhost.queues();
        let kept = |name: &str| queues.get(name).copied().unwrap_or((0, 0));
        let (kept_in, other) = match dead_letter {
            Some(_) => ("dead", "herald.rejected"),
            None => ("herald.rejected", "dead"),
        };
        assert_eq!(kept(kept_in), (2, 0), "both kept in {kept_in}: {queues:?}");
        assert_eq!(kept(other), (0, 0), "none in {other}: {queues:?}");
        assert_eq!(kept(&celery.queue), (0, 0), "herald's queue is empty");
        // Each kept as it came (two loops set them aside, in either order).
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let kept = channel
                .basic_get(kept_in.into(), BasicGetOptions::default())
                .await
                .unwrap()
                .expect("a message kept");
            let headers = kept
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            match dead_letter {
                Some(_) => assert!(
                    headers.inner().contains_key("x-death"),
                    "dead-lettered by RabbitMQ: {headers:?}"
                ),
                None => assert!(
                    headers.inner().contains_key("x-herald-reason"),
                    "the reason: {headers:?}"
                ),
            }
            bodies.push(String::from_utf8(kept.delivery.data.clone()).unwrap());
        }
        bodies.sort_unstable();
        assert_eq!(bodies, ["[[], {}, {}]", "{not json"], "kept as they came");
        drop(herald);
    }
    let pool = ledger(&project).await;
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM herald_jobs").await,
        2,
        "only the readable messages made jobs"
    );
}
