//! The Redis sorted-set layer's own behaviour, on the shared Redis with a
//! fresh key prefix per test: keys and scores, TTLs, expiry, capacity,
//! memberships kept alive, the in-flight backup, and Redis being down.

use std::time::Duration;

use herald::config::{LayerBackend, LayerSettings, Settings};
use herald::layer::redis::keys::{group_key, inflight_key, queue_key};
use herald::layer::{ChannelLayer, LayerError, Message, RedisLayer};
use redis::AsyncCommands;
use serde_json::json;

const REDIS: &str = "redis://127.0.0.1:6379";

pub(crate) fn settings() -> LayerSettings {
    let mut layer = Settings::defaults().layer;
    layer.backend = LayerBackend::Redis;
    layer.hosts = vec![std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| REDIS.into())];
    layer.prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    layer
}

pub(crate) async fn conn(settings: &LayerSettings) -> redis::aio::MultiplexedConnection {
    redis::Client::open(settings.hosts[0].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn message(n: i64) -> Message {
    json!({"type": "send_notification", "n": n})
        .as_object()
        .unwrap()
        .clone()
}

async fn receive(layer: &RedisLayer, channel: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(10), layer.receive(channel))
        .await
        .expect("message within 10 s")
        .unwrap()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn keys_scores_and_ttls_are_channels_redis_ones() {
    let s = settings();
    let layer = RedisLayer::new(&s).unwrap();
    let member = "specific.aaaa!bbbb";
    let before = now();
    layer.group_add("notifications_1", member).await.unwrap();
    let mut c = conn(&s).await;
    let gkey = group_key(&s.prefix, "notifications_1");
    let score: f64 = c.zscore(&gkey, member).await.unwrap();
    assert!(
        score >= before.floor() && score <= now() + 1.0,
        "score is wall-clock seconds"
    );
    let ttl: i64 = c.ttl(&gkey).await.unwrap();
    assert!(
        ttl > 86_000 && ttl <= 86_400,
        "group TTL is group_expiry: {ttl}"
    );

    layer
        .group_send("notifications_1", message(1))
        .await
        .unwrap();
    let qkey = queue_key(&s.prefix, member);
    assert_eq!(qkey, format!("{}specific.aaaa!", s.prefix));
    let ttl: i64 = c.ttl(&qkey).await.unwrap();
    assert!(ttl > 0 && ttl <= 60, "queue TTL is expiry: {ttl}");
    let raw: Vec<Vec<u8>> = c.zrange(&qkey, 0, -1).await.unwrap();
    let decoded: serde_json::Value = rmp_serde::from_slice(&raw[0][12..]).unwrap();
    assert_eq!(
        decoded,
        json!({"type": "send_notification", "n": 1, "__asgi_channel__": [member]})
    );

    layer.send("specific.aaaa!cccc", message(2)).await.unwrap();
    let raw: Vec<Vec<u8>> = c.zrange(&qkey, 0, -1).await.unwrap();
    let decoded: serde_json::Value = rmp_serde::from_slice(&raw[1][12..]).unwrap();
    assert_eq!(
        decoded["__asgi_channel__"], "specific.aaaa!cccc",
        "a string on send"
    );
}

#[tokio::test]
async fn group_send_makes_one_copy_per_queue_key() {
    let s = settings();
    let layer = RedisLayer::new(&s).unwrap();
    for member in ["specific.p1!a", "specific.p1!b", "specific.p2!c"] {
        layer.group_add("g", member).await.unwrap();
    }
    let report = layer.group_send("g", message(1)).await.unwrap();
    assert_eq!((report.delivered, report.dropped), (2, 0));
    let mut c = conn(&s).await;
    let raw: Vec<Vec<u8>> = c
        .zrange(queue_key(&s.prefix, "specific.p1!"), 0, -1)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    let decoded: serde_json::Value = rmp_serde::from_slice(&raw[0][12..]).unwrap();
    let mut names: Vec<String> =
        serde_json::from_value(decoded["__asgi_channel__"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["specific.p1!a", "specific.p1!b"]);
}

#[tokio::test]
async fn group_send_many_answers_each_send_in_order_across_shards() {
    let mut s = settings();
    let base = s.hosts[0].trim_end_matches('/').to_string();
    s.hosts = vec![format!("{base}/0"), format!("{base}/1")]; // two shards
    let layer = RedisLayer::new(&s).unwrap();
    let mut channels = Vec::new();
    let mut sends = Vec::new();
    for n in 0..40 {
        let channel = layer.new_channel("specific").await.unwrap();
        layer.group_add(&format!("g{n}"), &channel).await.unwrap();
        channels.push(channel);
        sends.push((format!("g{n}"), message(n)));
    }
    sends.insert(7, ("bad name".into(), message(100)));
    sends.insert(20, ("nobody".into(), message(101)));
    let answers = layer.group_send_many(sends).await;
    assert_eq!(answers.len(), 42);
    assert!(matches!(answers[7], Err(LayerError::InvalidGroupName(_))));
    assert_eq!(answers[20].as_ref().unwrap().delivered, 0, "no members");
    let delivered: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 7 && *i != 20)
        .map(|(_, answer)| answer.as_ref().unwrap().delivered)
        .collect();
    assert_eq!(delivered, vec![1; 40]);
    for (n, channel) in channels.iter().enumerate() {
        assert_eq!(receive(&layer, channel).await["n"], n as i64);
    }
}

#[tokio::test]
async fn herald_to_herald_through_redis() {
    let s = settings();
    let sender = RedisLayer::new(&s).unwrap();
    let receiver = RedisLayer::new(&s).unwrap();
    let a = receiver.new_channel("specific").await.unwrap();
    let b = receiver.new_channel("specific").await.unwrap();
    receiver.group_add("notifications_5", &a).await.unwrap();
    receiver.group_add("notifications_5", &b).await.unwrap();
    let report = sender
        .group_send("notifications_5", message(7))
        .await
        .unwrap();
    assert_eq!(report.delivered, 1, "both channels share one queue key");
    assert_eq!(receive(&receiver, &a).await, message(7));
    assert_eq!(receive(&receiver, &b).await, message(7));
    sender.send(&a, message(8)).await.unwrap();
    assert_eq!(receive(&receiver, &a).await, message(8));
    // The backup is cleared once messages are handed over.
    let mut c = conn(&s).await;
    let key = inflight_key(&queue_key(&s.prefix, &a));
    let mut left = 1;
    for _ in 0..50 {
        left = c.zcard(&key).await.unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_burst_larger_than_one_batch_arrives_whole() {
    let mut s = settings();
    s.capacity = 5000;
    let layer = RedisLayer::new(&s).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("burst", &channel).await.unwrap();
    for n in 0..2000 {
        layer.group_send("burst", message(n)).await.unwrap();
    }
    for n in 0..2000 {
        assert_eq!(receive(&layer, &channel).await["n"], n, "in order");
    }
    assert_eq!(layer.dropped_total(), 0);
}

#[tokio::test]
async fn messages_left_in_flight_are_restored() {
    let s = settings();
    let layer = RedisLayer::new(&s).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    // A reader that died after popping left this in the backup.
    let mut stranded = message(42);
    stranded.insert("__asgi_channel__".into(), json!([channel]));
    let mut member = vec![0u8; 12];
    member.extend(rmp_serde::to_vec_named(&stranded).unwrap());
    let mut c = conn(&s).await;
    let key = inflight_key(&queue_key(&s.prefix, &channel));
    let _: () = c.zadd(&key, member, now()).await.unwrap();
    assert_eq!(receive(&layer, &channel).await, message(42));
}

#[tokio::test]
async fn full_channel_refuses_send_and_expired_messages_free_it() {
    let mut s = settings();
    s.capacity = 2;
    s.expiry = 1;
    let layer = RedisLayer::new(&s).unwrap();
    layer.send("general_a", message(1)).await.unwrap();
    layer.send("general_a", message(2)).await.unwrap();
    assert_eq!(
        layer.send("general_a", message(3)).await,
        Err(LayerError::ChannelFull("general_a".into()))
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    layer.send("general_a", message(4)).await.unwrap();
    assert_eq!(layer.receive("general_a").await.unwrap(), message(4));
}

#[tokio::test]
async fn reserved_key_and_bad_names_are_refused() {
    let layer = RedisLayer::new(&settings()).unwrap();
    let mut bad = message(1);
    bad.insert("__asgi_channel__".into(), json!("x"));
    assert!(matches!(
        layer.send("general", bad).await,
        Err(LayerError::InvalidMessage(_))
    ));
    assert!(matches!(
        layer.group_add("bad group", "c").await,
        Err(LayerError::InvalidGroupName(_))
    ));
    assert!(matches!(
        layer.send("bad channel", message(1)).await,
        Err(LayerError::InvalidChannelName(_))
    ));
    assert!(matches!(
        layer.receive("specific.someone-else!x").await,
        Err(LayerError::InvalidChannelName(_))
    ));
}

/// A member older than group_expiry is pruned, unless the layer renews it
/// (every quarter of group_expiry, at least every second).
#[tokio::test]
async fn memberships_are_renewed_before_group_expiry() {
    let mut s = settings();
    s.group_expiry = 3;
    let layer = RedisLayer::new(&s).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("kept", &channel).await.unwrap();
    layer.group_add("kept", "specific.stale!x").await.unwrap(); // not local: not renewed
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let report = layer.group_send("kept", message(1)).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(receive(&layer, &channel).await, message(1));
    let members: Vec<String> = conn(&s)
        .await
        .zrange(group_key(&s.prefix, "kept"), 0, -1)
        .await
        .unwrap();
    assert_eq!(members, vec![channel]);
}

#[tokio::test]
async fn close_channel_leaves_its_groups() {
    let s = settings();
    let layer = RedisLayer::new(&s).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("g1", &channel).await.unwrap();
    layer.group_add("g2", &channel).await.unwrap();
    layer.close_channel(&channel).await.unwrap();
    let mut c = conn(&s).await;
    for group in ["g1", "g2"] {
        let members: Vec<String> = c.zrange(group_key(&s.prefix, group), 0, -1).await.unwrap();
        assert!(members.is_empty(), "{group}");
    }
    assert!(layer.receive(&channel).await.is_err());
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_hang_or_panic() {
    let mut s = settings();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.hosts = vec![format!("redis://127.0.0.1:{port}")];
    let layer = RedisLayer::new(&s).unwrap();
    let result =
        tokio::time::timeout(Duration::from_secs(10), layer.group_send("g", message(1))).await;
    assert!(
        matches!(result, Ok(Err(LayerError::Unavailable(_)))),
        "{result:?}"
    );
    let result =
        tokio::time::timeout(Duration::from_secs(10), layer.send("general", message(1))).await;
    assert!(matches!(result, Ok(Err(LayerError::Unavailable(_)))));
}
