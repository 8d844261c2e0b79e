//! The in-memory channel layer against channels' InMemoryChannelLayer
//! semantics: capacity, expiry, groups, names.

use std::sync::Arc;
use std::time::Duration;

use herald::config::{ChannelCapacity, LayerBackend, LayerSettings, Settings};
use herald::layer::{ChannelLayer, GroupSendReport, LayerError, MemoryLayer, Message};
use serde_json::json;

fn settings(capacity: usize) -> LayerSettings {
    let mut layer = Settings::defaults().layer;
    assert_eq!(layer.backend, LayerBackend::Memory);
    layer.capacity = capacity;
    layer
}

fn message(n: i64) -> Message {
    json!({"type": "test.message", "n": n})
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn send_then_receive_in_order() {
    let layer = MemoryLayer::new(&settings(10)).unwrap();
    let channel = layer.new_channel("specific").await.unwrap();
    assert!(channel.starts_with("specific.inmemory!"));
    for n in 0..3 {
        layer.send(&channel, message(n)).await.unwrap();
    }
    for n in 0..3 {
        assert_eq!(layer.receive(&channel).await.unwrap(), message(n));
    }
}

#[tokio::test]
async fn receive_waits_for_a_send() {
    let layer = Arc::new(MemoryLayer::new(&settings(10)).unwrap());
    let channel = layer.new_channel("specific").await.unwrap();
    let waiting = tokio::spawn({
        let (layer, channel) = (layer.clone(), channel.clone());
        async move { layer.receive(&channel).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    layer.send(&channel, message(1)).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), message(1));
}

#[tokio::test]
async fn send_to_a_full_channel_fails_typed() {
    let layer = MemoryLayer::new(&settings(2)).unwrap();
    layer.send("general", message(1)).await.unwrap();
    layer.send("general", message(2)).await.unwrap();
    assert_eq!(
        layer.send("general", message(3)).await,
        Err(LayerError::ChannelFull("general".into()))
    );
    layer.receive("general").await.unwrap();
    layer.send("general", message(3)).await.unwrap();
}

#[tokio::test]
async fn channel_capacity_patterns_apply_first_match() {
    let mut s = settings(1);
    s.channel_capacity = vec![
        ChannelCapacity {
            pattern: "big.*".into(),
            capacity: 3,
        },
        ChannelCapacity {
            pattern: "big.small".into(),
            capacity: 1,
        },
    ];
    let layer = MemoryLayer::new(&s).unwrap();
    for n in 0..3 {
        layer.send("big.small", message(n)).await.unwrap();
    }
    assert!(matches!(
        layer.send("big.small", message(4)).await,
        Err(LayerError::ChannelFull(_))
    ));
    layer.send("other", message(1)).await.unwrap();
    assert!(layer.send("other", message(2)).await.is_err());
}

#[tokio::test]
async fn group_send_reaches_members_and_drops_on_full() {
    let layer = MemoryLayer::new(&settings(1)).unwrap();
    let a = layer.new_channel("specific").await.unwrap();
    let b = layer.new_channel("specific").await.unwrap();
    let outsider = layer.new_channel("specific").await.unwrap();
    layer.group_add("notifications_1", &a).await.unwrap();
    layer.group_add("notifications_1", &b).await.unwrap();
    layer.send(&b, message(0)).await.unwrap(); // b is now full
    let report = layer
        .group_send("notifications_1", message(1))
        .await
        .unwrap();
    assert_eq!(
        report,
        GroupSendReport {
            delivered: 1,
            held: 0,
            dropped: 1
        }
    );
    assert_eq!(layer.dropped_total(), 1);
    assert_eq!(layer.receive(&a).await.unwrap(), message(1));
    // b lost a copy: it is told so first, then gets what it holds.
    assert_eq!(
        layer.receive(&b).await.unwrap()["type"],
        herald::layer::RESYNC
    );
    assert_eq!(layer.receive(&b).await.unwrap(), message(0));
    layer.send(&outsider, message(9)).await.unwrap();
    assert_eq!(
        layer.receive(&outsider).await.unwrap(),
        message(9),
        "non-members get nothing"
    );
}

#[tokio::test]
async fn group_discard_stops_delivery() {
    let layer = MemoryLayer::new(&settings(10)).unwrap();
    let a = layer.new_channel("specific").await.unwrap();
    layer.group_add("g", &a).await.unwrap();
    layer.group_discard("g", &a).await.unwrap();
    let report = layer.group_send("g", message(1)).await.unwrap();
    assert_eq!(report, GroupSendReport::default());
    layer.group_discard("never-existed", &a).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn messages_expire() {
    let layer = MemoryLayer::new(&settings(10)).unwrap();
    layer.send("general", message(1)).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    layer.send("general", message(2)).await.unwrap();
    assert_eq!(layer.receive("general").await.unwrap(), message(2));
}

#[tokio::test(start_paused = true)]
async fn expired_messages_free_capacity() {
    let layer = MemoryLayer::new(&settings(1)).unwrap();
    layer.send("general", message(1)).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    layer.send("general", message(2)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn memberships_expire_unless_renewed() {
    let mut s = settings(10);
    s.group_expiry = 100;
    let layer = MemoryLayer::new(&s).unwrap();
    let stale = layer.new_channel("specific").await.unwrap();
    let renewed = layer.new_channel("specific").await.unwrap();
    layer.group_add("g", &stale).await.unwrap();
    layer.group_add("g", &renewed).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    layer.group_add("g", &renewed).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    let report = layer.group_send("g", message(1)).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(layer.receive(&renewed).await.unwrap(), message(1));
}

#[tokio::test]
async fn names_are_checked() {
    let layer = MemoryLayer::new(&settings(10)).unwrap();
    assert!(matches!(
        layer.send("bad name", message(1)).await,
        Err(LayerError::InvalidChannelName(_))
    ));
    assert!(matches!(
        layer.group_add("bad!group", "ok").await,
        Err(LayerError::InvalidGroupName(_))
    ));
    assert!(matches!(
        layer.group_add("ok", "bad channel").await,
        Err(LayerError::InvalidChannelName(_))
    ));
    let long = "g".repeat(100);
    assert!(matches!(
        layer.group_send(&long, message(1)).await,
        Err(LayerError::InvalidGroupName(_))
    ));
}

#[tokio::test]
async fn close_wakes_receivers_and_refuses_work() {
    let layer = Arc::new(MemoryLayer::new(&settings(10)).unwrap());
    let waiting = tokio::spawn({
        let layer = layer.clone();
        async move { layer.receive("general").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    layer.close();
    assert_eq!(waiting.await.unwrap(), Err(LayerError::Closed));
    assert_eq!(
        layer.send("general", message(1)).await,
        Err(LayerError::Closed)
    );
}

#[tokio::test]
async fn close_channel_leaves_every_group() {
    let layer = MemoryLayer::new(&settings(10)).unwrap();
    let a = layer.new_channel("specific").await.unwrap();
    let b = layer.new_channel("specific").await.unwrap();
    for group in ["g1", "g2"] {
        layer.group_add(group, &a).await.unwrap();
        layer.group_add(group, &b).await.unwrap();
    }
    layer.group_discard("g2", &b).await.unwrap();
    layer.close_channel(&a).await.unwrap();
    assert_eq!(
        layer.group_send("g1", message(1)).await.unwrap().delivered,
        1
    );
    assert_eq!(
        layer.group_send("g2", message(2)).await.unwrap().delivered,
        0
    );
    assert_eq!(layer.receive(&b).await.unwrap(), message(1));
}
