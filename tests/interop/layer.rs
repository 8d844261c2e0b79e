//! herald's Redis layers and Python channels_redis, both ways.

use std::time::Duration;

use herald::config::LayerBackend;
use herald::layer::redis::keys::{consistent_hash, group_key, queue_key};
use herald::layer::{ChannelLayer, LayerError, Message, PubSubLayer, RedisLayer};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::harness::{LayerConfig, Peer, RedisServer, redis_conn};

/// Messages that exercise types: the contract's example, unicode, 64-bit
/// edges, floats, null, nesting.
fn messages() -> Vec<Value> {
    vec![
        json!({"type": "send_notification", "data": {
            "id": 123, "title": "Task Overdue", "message": "Task \"Report\" is now overdue.",
            "notification_type": "overdue", "is_read": false,
            "created_at": "2025-12-11T08:12:34.123456Z", "data": {"task_id": 42}}}),
        json!({"type": "send_notification", "data": {
            "title": "Überfällig ✓ 🔔 日本語 \"q\" \\ \n\t", "empty": "", "nul": "a\u{0}b"}}),
        json!({"type": "send_notification", "data": {
            "big": [i64::MAX, i64::MIN, u64::MAX, 9_007_199_254_740_993_i64, 0, -1, 255, 65_536]}}),
        json!({"type": "send_notification", "data": {
            "floats": [0.1, 1.0, -2.5, 1e300, 5e-324, std::f64::consts::PI], "null": null,
            "bools": [true, false], "nested": {"a": {"b": [1, {"c": null}, [[]]]}}, "obj": {}}}),
    ]
}

fn as_message(value: &Value) -> Message {
    value.as_object().unwrap().clone()
}

async fn receive(layer: &dyn ChannelLayer, channel: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(15), layer.receive(channel))
        .await
        .expect("a message within 15 s")
        .unwrap()
}

/// herald group_send -> a Python consumer's `send_notification` handler,
/// same values and the same Python types; default prefix `asgi`.
#[tokio::test]
async fn herald_group_send_reaches_python_consumer_handler() {
    let mut config = LayerConfig::fresh();
    config.prefix = "asgi".into();
    let group = format!("interop_{}", uuid::Uuid::new_v4().simple());
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let count = messages().len().to_string();
    let peer = Peer::start(
        "consume",
        &config,
        &["--group", &group, "--count", &count],
        &[],
    );
    assert!(peer.next()["ready"].is_string());
    for message in messages() {
        let report = layer
            .group_send(&group, as_message(&message))
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
    }
    peer.expect_events(&messages());
    peer.finish();
}

/// Python group_send and send -> herald receive, exactly.
#[tokio::test]
async fn python_group_send_and_send_reach_herald() {
    crate::harness::init_tracing();
    let config = LayerConfig::fresh();
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("notifications_7", &channel).await.unwrap();
    let sent = Peer::run(
        "group_send",
        &config,
        &["--group", "notifications_7"],
        &messages(),
    );
    assert_eq!(sent, vec![json!({"sent": true})]);
    for expected in messages() {
        assert_eq!(Value::Object(receive(&layer, &channel).await), expected);
    }
    let sent = Peer::run("send", &config, &["--channel", &channel], &messages());
    assert_eq!(sent.len(), messages().len());
    for expected in messages() {
        assert_eq!(Value::Object(receive(&layer, &channel).await), expected);
    }
}

/// herald send -> a Python channel's receive.
#[tokio::test]
async fn herald_send_reaches_python_receive() {
    let config = LayerConfig::fresh();
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let count = messages().len().to_string();
    let peer = Peer::start("receive", &config, &["--count", &count], &[]);
    let channel = peer.next()["ready"].as_str().unwrap().to_string();
    for message in messages() {
        layer.send(&channel, as_message(&message)).await.unwrap();
    }
    peer.expect_events(&messages());
    peer.finish();
}

fn numbered(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"type": "send_notification", "n": i}))
        .collect()
}

/// The `n` of every message stored in a queue key, in score order.
async fn stored(config: &LayerConfig, key: &str) -> Vec<i64> {
    let mut conn = redis_conn(&config.hosts[0]).await;
    let members: Vec<Vec<u8>> = conn.zrange(key, 0, -1).await.unwrap();
    let codec = herald::layer::redis::codec::Codec::for_queues(&[], 60);
    members
        .iter()
        .map(|m| codec.decode(m).unwrap()["n"].as_i64().unwrap())
        .collect()
}

/// Capacity 5 on both sides: group_send keeps the first five copies and,
/// at `full_channel_deadline = 0s`, drops the rest whoever sends, as
/// channels_redis does; send is refused at the same count. At the default
/// deadline herald holds the copy instead (issue 23), and the queue still
/// stops at five.
#[tokio::test]
async fn capacity_overflow_agrees_with_python() {
    let mut config = LayerConfig::fresh();
    config.capacity = 5;
    let holding = RedisLayer::new(&config.settings()).unwrap();
    let mut dropping = config.settings();
    dropping.full_channel_deadline = std::time::Duration::ZERO;
    let layer = RedisLayer::new(&dropping).unwrap();
    // A member nobody reads, so its queue fills.
    let idle = "specific.idle!member";
    layer.group_add("full_a", idle).await.unwrap();
    Peer::run("group_send", &config, &["--group", "full_a"], &numbered(8));
    let key = queue_key(&config.prefix, idle);
    assert_eq!(stored(&config, &key).await, vec![0, 1, 2, 3, 4]);
    let report = layer
        .group_send("full_a", as_message(&json!({"type": "x", "n": 99})))
        .await
        .unwrap();
    assert_eq!((report.delivered, report.dropped), (0, 1));
    assert_eq!(stored(&config, &key).await.len(), 5);
    let report = holding
        .group_send("full_a", as_message(&json!({"type": "x", "n": 98})))
        .await
        .unwrap();
    assert_eq!((report.delivered, report.held, report.dropped), (0, 1, 0));
    assert_eq!(stored(&config, &key).await, vec![0, 1, 2, 3, 4]);

    let idle_b = "specific.idleb!member";
    layer.group_add("full_b", idle_b).await.unwrap();
    let mut dropped = 0;
    for message in numbered(8) {
        dropped += layer
            .group_send("full_b", as_message(&message))
            .await
            .unwrap()
            .dropped;
    }
    assert_eq!(dropped, 3);
    Peer::run("group_send", &config, &["--group", "full_b"], &numbered(2));
    assert_eq!(
        stored(&config, &queue_key(&config.prefix, idle_b)).await,
        vec![0, 1, 2, 3, 4]
    );

    // send(): Python is refused after five, then herald too, and back.
    let answers = Peer::run(
        "send",
        &config,
        &["--channel", "general_full"],
        &numbered(7),
    );
    let full = answers.iter().filter(|a| a["full"] == true).count();
    assert_eq!((answers.len() - full, full), (5, 2));
    let refused = layer
        .send("general_full", as_message(&json!({"type": "x"})))
        .await;
    assert_eq!(refused, Err(LayerError::ChannelFull("general_full".into())));
    for message in numbered(5) {
        layer
            .send("general_other", as_message(&message))
            .await
            .unwrap();
    }
    let answers = Peer::run(
        "send",
        &config,
        &["--channel", "general_other"],
        &numbered(1),
    );
    assert_eq!(answers, vec![json!({"full": true})]);
}

/// Two hosts: the same shard for 1,000 group names, and messages both ways
/// across shards.
#[tokio::test]
async fn two_hosts_shard_like_python() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let mut config = LayerConfig::fresh();
    config.hosts = vec![a.url(), b.url()];
    let names: Vec<String> = (0..1000).map(|i| format!("notifications_{i}")).collect();
    let python = Peer::run(
        "hash",
        &config,
        &["--ring", "2"],
        &[Value::String(names.join(" "))],
    );
    assert_eq!(python.len(), 1000);
    for line in &python {
        let name = line[0].as_str().unwrap();
        assert_eq!(
            consistent_hash(name, 2) as i64,
            line[1].as_i64().unwrap(),
            "{name}"
        );
    }
    let on_shard = |shard: usize| names.iter().filter(move |n| consistent_hash(n, 2) == shard);
    let groups: Vec<&String> = on_shard(0).take(3).chain(on_shard(1).take(3)).collect();

    // Python -> herald, one herald channel in groups on both shards.
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    for group in &groups {
        layer.group_add(group, &channel).await.unwrap();
    }
    for (i, group) in groups.iter().enumerate() {
        let conn_url = &config.hosts[consistent_hash(group, 2)];
        let members: Vec<String> = redis_conn(conn_url)
            .await
            .zrange(group_key(&config.prefix, group), 0, -1)
            .await
            .unwrap();
        assert_eq!(
            members,
            vec![channel.clone()],
            "group {group} lives on its shard"
        );
        Peer::run(
            "group_send",
            &config,
            &["--group", group],
            &[json!({"type": "send_notification", "n": i})],
        );
        assert_eq!(receive(&layer, &channel).await["n"], i);
    }

    // herald -> Python, a Python receiver per group.
    for group in &groups {
        layer.group_discard(group, &channel).await.unwrap();
    }
    for (i, group) in groups.iter().enumerate() {
        let peer = Peer::start("receive", &config, &["--group", group], &[]);
        assert!(peer.next()["ready"].is_string());
        let message = json!({"type": "send_notification", "n": i});
        assert_eq!(
            layer
                .group_send(group, as_message(&message))
                .await
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(peer.next()["event"], message);
        peer.finish();
    }
}

/// symmetric_encryption_keys on both sides: herald's members are Fernet
/// tokens, and each side reads the other's.
#[tokio::test]
async fn encrypted_both_ways() {
    let mut config = LayerConfig::fresh();
    config.keys = vec!["first-key".into(), "second-key".into()];
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let count = messages().len().to_string();
    let peer = Peer::start(
        "consume",
        &config,
        &["--group", "enc", "--count", &count],
        &[],
    );
    assert!(peer.next()["ready"].is_string());
    for message in messages() {
        layer.group_send("enc", as_message(&message)).await.unwrap();
    }
    for expected in messages() {
        assert_eq!(peer.next()["event"], expected);
    }
    peer.finish();

    layer
        .group_add("enc_idle", "specific.idle!x")
        .await
        .unwrap();
    layer
        .group_send("enc_idle", as_message(&messages()[0]))
        .await
        .unwrap();
    let mut conn = redis_conn(&config.hosts[0]).await;
    let members: Vec<Vec<u8>> = conn
        .zrange(queue_key(&config.prefix, "specific.idle!x"), 0, -1)
        .await
        .unwrap();
    assert!(members[0][12..].starts_with(b"gAAAAA"), "stored encrypted");

    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("enc_back", &channel).await.unwrap();
    Peer::run("group_send", &config, &["--group", "enc_back"], &messages());
    for expected in messages() {
        assert_eq!(Value::Object(receive(&layer, &channel).await), expected);
    }
}

/// The pub/sub variant, both ways.
#[tokio::test]
async fn pubsub_both_ways() {
    let mut config = LayerConfig::fresh();
    config.backend = LayerBackend::RedisPubsub;
    let layer = PubSubLayer::new(&config.settings()).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    assert!(channel.starts_with(&format!("{}specific.", config.prefix)));
    layer.group_add("ps_group", &channel).await.unwrap();
    Peer::run("group_send", &config, &["--group", "ps_group"], &messages());
    for expected in messages() {
        assert_eq!(Value::Object(receive(&layer, &channel).await), expected);
    }

    let count = messages().len().to_string();
    let peer = Peer::start(
        "receive",
        &config,
        &["--group", "ps_back", "--count", &count],
        &[],
    );
    assert!(peer.next()["ready"].is_string());
    for message in messages() {
        let report = layer
            .group_send("ps_back", as_message(&message))
            .await
            .unwrap();
        assert_eq!(report.delivered, 1, "one subscribed process");
    }
    peer.expect_events(&messages());
    peer.finish();
}

/// Redis restarted under a herald subscriber: memberships come back by
/// themselves and what Python sends afterwards arrives, same process.
#[tokio::test]
async fn redis_restart_under_a_subscriber() {
    let mut server = RedisServer::start();
    let mut config = LayerConfig::fresh();
    config.hosts = vec![server.url()];
    let layer = RedisLayer::new(&config.settings()).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("notifications_9", &channel).await.unwrap();
    Peer::run(
        "group_send",
        &config,
        &["--group", "notifications_9"],
        &numbered(1),
    );
    assert_eq!(receive(&layer, &channel).await["n"], 0);

    server.restart();
    let group = group_key(&config.prefix, "notifications_9");
    let mut restored = false;
    for _ in 0..100 {
        if let Ok(client) = redis::Client::open(server.url())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let members: Vec<String> = conn.zrange(&group, 0, -1).await.unwrap_or_default();
            if members == vec![channel.clone()] {
                restored = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restored, "membership restored after the restart");
    assert!(layer.reconnects() >= 1);
    Peer::run(
        "group_send",
        &config,
        &["--group", "notifications_9"],
        &numbered(3),
    );
    // After the reconnect the channel is told first that it may have lost
    // messages, then the new ones arrive.
    assert_eq!(
        receive(&layer, &channel).await["type"],
        herald::layer::RESYNC
    );
    for n in 0..3 {
        assert_eq!(receive(&layer, &channel).await["n"], n);
    }
}
