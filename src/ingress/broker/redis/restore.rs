//! Putting held messages back, as kombu does: one tag at a time
//! (`restore_by_tag`, marked redelivered, on the queues its exchange and
//! routing key are bound to), and the restore sweep (`restore_visible`,
//! under kombu's `unacked_mutex`) over what was held too long.

use std::time::Duration;

use serde_json::Value;

use super::{RedisBroker, SEP, unix_now};

/// What a restore sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Messages put back in their queues.
    pub restored: usize,
    /// Held by a consumer for less than its allowance; left alone.
    pub young: usize,
}

impl RedisBroker {
    /// Puts the messages held under `tags` back at the consuming end of
    /// their queues (kombu's `restore_by_tag`), marked redelivered; how many.
    pub async fn restore(&self, tags: &[&str]) -> Result<usize, redis::RedisError> {
        if tags.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let held: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.unacked())
            .arg(tags)
            .query_async(&mut conn)
            .await?;
        let mut restored = 0;
        for (tag, held) in tags.iter().zip(held) {
            restored += self.restore_one(tag, held.as_deref()).await?;
        }
        Ok(restored)
    }

    /// Restores one tag; 1 when a message went back, 0 otherwise (an
    /// orphan index entry removed, or the entry left where it is).
    async fn restore_one(&self, tag: &str, held: Option<&str>) -> Result<usize, redis::RedisError> {
        let (lists, payload) = match held.map(parse_held) {
            Some(Some((envelope, exchange, routing_key))) => {
                let priority = envelope["properties"]["priority"].as_i64().unwrap_or(0);
                let queues = self.lookup(&exchange, &routing_key).await?;
                if queues.is_empty() {
                    tracing::warn!(
                        tag,
                        exchange,
                        routing_key,
                        "no queue is bound for an unacknowledged message; left in unacked"
                    );
                    return Ok(0);
                }
                let lists: Vec<String> =
                    queues.iter().map(|q| self.keys.list(q, priority)).collect();
                (lists, redelivered(envelope).to_string())
            }
            Some(None) => {
                tracing::warn!(
                    tag,
                    "an unacknowledged message that is not kombu's [envelope, exchange, routing_key]; left in unacked"
                );
                return Ok(0);
            }
            None => (Vec::new(), String::new()),
        };
        let mut call = self.restore.prepare_invoke();
        call.key(self.keys.unacked()).key(self.keys.unacked_index());
        for list in lists {
            call.key(list);
        }
        call.arg(tag).arg(payload).arg(held.unwrap_or(""));
        let pushed: usize = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(pushed)
    }

    /// The queues a message of (exchange, routing key) goes to (kombu's
    /// `_lookup`): Celery's anonymous exchange names the queue itself; a
    /// named one is looked up in its bindings (direct: same routing key).
    async fn lookup(
        &self,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Vec<String>, redis::RedisError> {
        if exchange.is_empty() {
            return Ok(if routing_key.is_empty() {
                vec![]
            } else {
                vec![routing_key.to_string()]
            });
        }
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.binding(exchange))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut queues: Vec<String> = members
            .iter()
            .filter_map(|member| {
                let mut parts = member.splitn(3, SEP);
                let (key, _pattern, queue) = (parts.next()?, parts.next()?, parts.next()?);
                (key == routing_key).then(|| queue.to_string())
            })
            .collect();
        queues.sort();
        queues.dedup();
        Ok(queues)
    }

    /// kombu's `restore_visible`, under its `unacked_mutex`: messages held
    /// in `unacked` longer than `own_after` (on herald's queues) or
    /// `visibility_timeout` (any other queue) go back to their queues.
    /// Skipped (zero) while another consumer sweeps.
    pub async fn sweep(
        &self,
        own_after: Duration,
        visibility_timeout: Duration,
    ) -> Result<Swept, redis::RedisError> {
        let mut conn = self.conn.clone();
        let token = ulid::Ulid::generate().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(self.keys.mutex())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(300_000)
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            return Ok(Swept::default());
        }
        let swept = self.sweep_locked(own_after, visibility_timeout).await;
        let mut unlock = self.unlock.prepare_invoke();
        unlock.key(self.keys.mutex()).arg(&token);
        let _: i64 = unlock.invoke_async(&mut conn).await?;
        swept
    }

    async fn sweep_locked(
        &self,
        own_after: Duration,
        visibility_timeout: Duration,
    ) -> Result<Swept, redis::RedisError> {
        const PAGE: usize = 1000;
        const PAGES: usize = 100;
        let now = unix_now();
        let own_ceiling = now - own_after.as_secs_f64();
        let ceiling = now - visibility_timeout.as_secs_f64();
        let mut conn = self.conn.clone();
        let mut swept = Swept::default();
        // Entries still in the index ahead of the next page.
        let mut offset = 0;
        for _ in 0..PAGES {
            let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.keys.unacked_index())
                .arg("-inf")
                .arg(own_ceiling.min(now))
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(offset)
                .arg(PAGE)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            let tags: Vec<&str> = page.iter().map(|(tag, _)| tag.as_str()).collect();
            let held: Vec<Option<String>> = if tags.is_empty() {
                Vec::new()
            } else {
                redis::cmd("HMGET")
                    .arg(self.keys.unacked())
                    .arg(&tags)
                    .query_async(&mut conn)
                    .await?
            };
            for ((tag, score), held) in page.iter().zip(&held) {
                let ours = held
                    .as_deref()
                    .and_then(parse_held)
                    .is_some_and(|(_, ex, rk)| ex.is_empty() && self.keys.queues.contains(&rk));
                if ours || *score <= ceiling || held.is_none() {
                    let restored = self.restore_one(tag, held.as_deref()).await?;
                    swept.restored += restored;
                    // An entry left in place (unreadable, no queue bound)
                    // stays ahead of the next page.
                    if restored == 0 && held.is_some() {
                        offset += 1;
                    }
                } else {
                    swept.young += 1;
                    offset += 1;
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(swept)
    }
}

/// kombu's `unacked` value: `[envelope, exchange, routing_key]`.
fn parse_held(held: &str) -> Option<(Value, String, String)> {
    let Value::Array(mut parts) = serde_json::from_str(held).ok()? else {
        return None;
    };
    if parts.len() != 3 || !parts[0].is_object() {
        return None;
    }
    let routing_key = parts.pop()?.as_str().unwrap_or_default().to_string();
    let exchange = parts.pop()?.as_str().unwrap_or_default().to_string();
    Some((parts.pop()?, exchange, routing_key))
}

/// The envelope as kombu restores it: `redelivered` in its headers and in
/// its delivery info.
fn redelivered(mut envelope: Value) -> Value {
    if !envelope["headers"].is_object() {
        envelope["headers"] = Value::Object(Default::default());
    }
    envelope["headers"]["redelivered"] = Value::Bool(true);
    if !envelope["properties"]["delivery_info"].is_object() && envelope["properties"].is_object() {
        envelope["properties"]["delivery_info"] = Value::Object(Default::default());
    }
    if envelope["properties"]["delivery_info"].is_object() {
        envelope["properties"]["delivery_info"]["redelivered"] = Value::Bool(true);
    }
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restored_envelopes_are_marked_redelivered_and_keep_the_rest() {
        let held = json!([{"body": "e30=", "headers": {"id": "1"},
            "properties": {"delivery_tag": "t", "priority": 3,
                           "delivery_info": {"exchange": "", "routing_key": "herald"}}}, "", "herald"]);
        let (envelope, exchange, routing_key) = parse_held(&held.to_string()).unwrap();
        assert_eq!((exchange.as_str(), routing_key.as_str()), ("", "herald"));
        let envelope = redelivered(envelope);
        assert_eq!(envelope["headers"], json!({"id": "1", "redelivered": true}));
        assert_eq!(envelope["properties"]["delivery_info"]["redelivered"], true);
        assert_eq!(envelope["body"], "e30=");
        assert!(parse_held("[1, 2]").is_none());
        assert!(parse_held("not json").is_none());
    }
}
