//! `group_send` over the sorted sets: the members of many groups listed in
//! one script call per shard, then one copy per queue key (its
//! `__asgi_channel__` the list of that key's members) added in one script
//! call per shard, with copies that find their queue full held back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::held::{HeldCopy, hold};
use super::keys::{group_key, held_key, queue_key};
use super::shards::unavailable;
use super::{ASGI_CHANNEL, Inner, cutoff, now, scripts};
use crate::layer::names::{check_group_name, non_local_name};
use crate::layer::{GroupSendReport, LayerError, Message};

/// The live members of each group of `sends`, in their order: one
/// GROUP_MEMBERS call per shard for all of that shard's groups.
pub(super) async fn group_members(
    inner: &Inner,
    sends: &[(String, Message)],
) -> Vec<Result<Vec<String>, LayerError>> {
    let mut answers: Vec<Result<Vec<String>, LayerError>> = sends
        .iter()
        .map(|(group, _)| check_group_name(group).map(|()| Vec::new()))
        .collect();
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (group, _)) in sends.iter().enumerate() {
        if answers[i].is_ok() {
            by_shard.entry(inner.shard_for(group)).or_default().push(i);
        }
    }
    for (shard, indexes) in by_shard {
        let mut invocation = scripts::GROUP_MEMBERS.prepare_invoke();
        for &i in &indexes {
            invocation.key(group_key(&inner.prefix, &sends[i].0));
        }
        invocation.arg(cutoff(inner.group_expiry));
        let listed: Result<Vec<Vec<String>>, LayerError> = async {
            let mut conn = inner.shards[shard].conn().await?;
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)
        }
        .await;
        match listed {
            Ok(listed) => {
                for (i, members) in indexes.into_iter().zip(listed) {
                    answers[i] = Ok(members);
                }
            }
            Err(error) => {
                for i in indexes {
                    answers[i] = Err(error.clone());
                }
            }
        }
    }
    answers
}

/// Hands `message` to `members`: one copy per queue key, one GROUP_SEND
/// call per shard; copies that find their queue full are held (or, with
/// holding off, dropped and counted).
pub(super) async fn deliver(
    inner: &Arc<Inner>,
    group: &str,
    members: &[String],
    message: &Message,
) -> Result<GroupSendReport, LayerError> {
    let mut report = GroupSendReport::default();
    let notification_id = message
        .get("data")
        .and_then(|data| data.get("id"))
        .and_then(Value::as_i64);
    for (shard, batch) in bucket_by_queue(inner, members, message)? {
        let answers = send_batch(inner, shard, &batch).await?;
        for (copy, answer) in batch.into_iter().zip(answers) {
            match answer {
                0 => report.delivered += 1,
                number if number > 0 => {
                    report.held += 1;
                    let held = HeldCopy {
                        member: copy.member,
                        group: group.to_string(),
                        notification_id,
                    };
                    hold(inner, &copy.key, shard, copy.capacity, number, held);
                }
                _ => report.dropped += 1,
            }
        }
    }
    if report.dropped > 0 {
        inner
            .dropped
            .fetch_add(report.dropped as u64, Ordering::Relaxed);
    }
    Ok(report)
}

/// One queue key's copy of a group message: its member bytes and capacity.
struct QueueCopy {
    key: String,
    member: Vec<u8>,
    capacity: usize,
}

/// Groups members by queue key (one copy per key, `__asgi_channel__` the
/// list of that key's members) and the keys by shard.
fn bucket_by_queue(
    inner: &Inner,
    members: &[String],
    message: &Message,
) -> Result<BTreeMap<usize, Vec<QueueCopy>>, LayerError> {
    let mut by_key: BTreeMap<String, (usize, Vec<&str>)> = BTreeMap::new();
    let mut order = Vec::new();
    for channel in members {
        let key = queue_key(&inner.prefix, channel);
        let entry = by_key.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (inner.capacities.for_channel(channel), Vec::new())
        });
        entry.1.push(channel);
    }
    let mut shards: BTreeMap<usize, Vec<QueueCopy>> = BTreeMap::new();
    for key in order {
        let (capacity, channels) = &by_key[&key];
        let mut copy = message.clone();
        copy.insert(ASGI_CHANNEL.into(), Value::from(channels.clone()));
        let member = inner.codec.encode(&copy)?;
        let shard = inner.shard_for(non_local_name(channels[0]));
        shards.entry(shard).or_default().push(QueueCopy {
            key,
            member,
            capacity: *capacity,
        });
    }
    Ok(shards)
}

/// Runs GROUP_SEND for one shard's queue keys: per key, 0 when added, the
/// hold number when held, -1 when dropped.
async fn send_batch(
    inner: &Inner,
    shard: usize,
    batch: &[QueueCopy],
) -> Result<Vec<i64>, LayerError> {
    let mut invocation = scripts::GROUP_SEND.prepare_invoke();
    for copy in batch {
        invocation.key(&copy.key);
    }
    for copy in batch {
        invocation.key(held_key(&copy.key, &inner.client_prefix));
    }
    for copy in batch {
        invocation.arg(&copy.member);
    }
    for copy in batch {
        invocation.arg(copy.capacity);
    }
    invocation
        .arg(now())
        .arg(cutoff(inner.expiry))
        .arg(inner.expiry)
        .arg(u8::from(inner.held.enabled()))
        .arg(inner.held.key_lifetime());
    let mut conn = inner.shards[shard].conn().await?;
    invocation
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable)
}
