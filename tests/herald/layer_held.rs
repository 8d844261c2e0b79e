//! Backpressure in herald's publisher (issue 23): a group copy that finds
//! its Redis queue at capacity is held and placed later, in order, instead
//! of dropped as channels_redis drops it; other queues' copies go on at
//! once; a copy still unplaced at `layer.full_channel_deadline` is counted
//! as undelivered; "0s" keeps channels_redis's drop. The consumer here is
//! a queue key read by hand, as a slow Python reader pops it (ZPOPMIN).

use std::time::Duration;

use herald::layer::redis::keys::queue_key;
use herald::layer::{ChannelLayer, Message, RedisLayer};
use serde_json::json;

use crate::layer_redis::{conn, settings};

fn notification(id: i64) -> Message {
    json!({"type": "send_notification", "data": {"id": id}})
        .as_object()
        .unwrap()
        .clone()
}

/// Pops up to `count` messages of `queue` as a slow reader would, oldest
/// first, answering their notification ids.
async fn pop_ids(c: &mut redis::aio::MultiplexedConnection, queue: &str, count: usize) -> Vec<i64> {
    let popped: Vec<(Vec<u8>, f64)> = redis::cmd("ZPOPMIN")
        .arg(queue)
        .arg(count)
        .query_async(c)
        .await
        .unwrap();
    popped
        .into_iter()
        .map(|(member, _)| {
            let message: serde_json::Value = rmp_serde::from_slice(&member[12..]).unwrap();
            message["data"]["id"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn copies_for_a_full_queue_are_held_and_placed_in_order() {
    let s = settings();
    let layer = RedisLayer::new(&s).unwrap();
    // A slow consumer's channel (capacity 100) and a quick one's.
    layer
        .group_add("notifications_1", "specific.slow!a")
        .await
        .unwrap();
    layer
        .group_add("notifications_2", "specific.quick!b")
        .await
        .unwrap();
    let mut sends = Vec::new();
    for id in 1..=250 {
        sends.push(("notifications_1".to_string(), notification(id)));
        if id % 10 == 0 {
            sends.push(("notifications_2".to_string(), notification(1000 + id)));
        }
    }
    let mut held = 0;
    let mut dropped = 0;
    for chunk in sends.chunks(60) {
        for report in layer.group_send_many(chunk.to_vec()).await {
            let report = report.unwrap();
            held += report.held;
            dropped += report.dropped;
        }
    }
    assert_eq!(
        (held, dropped),
        (150, 0),
        "past the capacity, held; none dropped"
    );
    let mut c = conn(&s).await;
    // The quick consumer's copies were never held up behind the full queue.
    let quick = pop_ids(&mut c, &queue_key(&s.prefix, "specific.quick!b"), 100).await;
    assert_eq!(quick, (1..=25).map(|n| 1000 + n * 10).collect::<Vec<_>>());
    // The slow one reads 30 at a time; the held copies follow, in order.
    let slow = queue_key(&s.prefix, "specific.slow!a");
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.extend(pop_ids(&mut c, &slow, 30).await);
        if ids.len() >= 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids, (1..=250).collect::<Vec<_>>(), "every copy, in order");
    assert_eq!(layer.held_total(), 150);
    assert_eq!(layer.undelivered_total(), 0);
    // Nothing is held now: the next copy goes straight in.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(layer.held_now(), 0);
    let report = layer
        .group_send("notifications_1", notification(251))
        .await
        .unwrap();
    assert_eq!((report.delivered, report.held), (1, 0));
}

#[tokio::test]
async fn a_copy_still_held_at_the_deadline_is_undelivered_and_counted() {
    let mut s = settings();
    s.capacity = 5;
    s.full_channel_deadline = Duration::from_millis(800);
    let layer = RedisLayer::new(&s).unwrap();
    layer
        .group_add("notifications_7", "specific.gone!a")
        .await
        .unwrap();
    let sends: Vec<_> = (1..=8)
        .map(|id| ("notifications_7".to_string(), notification(id)))
        .collect();
    let reports = layer.group_send_many(sends).await;
    let held: usize = reports.iter().map(|r| r.as_ref().unwrap().held).sum();
    assert_eq!(held, 3);
    // Nobody reads: past the deadline the three are given up, counted.
    let started = std::time::Instant::now();
    while layer.undelivered_total() < 3 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(layer.undelivered_total(), 3);
    assert_eq!(
        layer.dropped_total(),
        3,
        "undelivered copies count as dropped"
    );
    assert_eq!(layer.held_now(), 0);
    // The queue kept its capacity's worth, for a reader that comes back.
    let mut c = conn(&s).await;
    let queue = queue_key(&s.prefix, "specific.gone!a");
    assert_eq!(pop_ids(&mut c, &queue, 10).await, vec![1, 2, 3, 4, 5]);
    // The hold is over: a later copy is added directly.
    let report = layer
        .group_send("notifications_7", notification(9))
        .await
        .unwrap();
    assert_eq!((report.delivered, report.held), (1, 0));
}

#[tokio::test]
async fn with_no_deadline_a_full_queue_drops_as_channels_redis_does() {
    let mut s = settings();
    s.capacity = 2;
    s.full_channel_deadline = Duration::ZERO;
    let layer = RedisLayer::new(&s).unwrap();
    layer
        .group_add("notifications_8", "specific.full!a")
        .await
        .unwrap();
    let sends: Vec<_> = (1..=3)
        .map(|id| ("notifications_8".to_string(), notification(id)))
        .collect();
    let reports: Vec<_> = layer
        .group_send_many(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.delivered, r.held, r.dropped))
            .collect::<Vec<_>>(),
        [(1, 0, 0), (1, 0, 0), (0, 0, 1)]
    );
    assert_eq!(layer.held_total(), 0);
}
