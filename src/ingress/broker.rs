//! Celery's Redis broker as kombu's Redis transport keeps it: one list per
//! queue and priority step (`<queue>`, `<queue>\x06\x163`, ...; producers
//! push on the left, consumers take from the right), and kombu's
//! acknowledgement emulation: a taken message waits in the `unacked` hash
//! (`tag -> [envelope, exchange, routing_key]`) and the `unacked_index`
//! sorted set (`tag -> time taken`) until it is acknowledged, and any
//! consumer's restore sweep puts back the ones left there too long.
//!
//! Herald takes a batch and records it in that bookkeeping in one script
//! (kombu's own BRPOP-then-record leaves a gap where a crash loses the
//! message), acknowledges once the jobs are in its ledger, and runs the
//! restore sweep itself, with kombu's mutex, since no kombu consumer may be
//! running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::CelerySettings;

/// kombu's separator between a queue name and its priority step.
pub const SEP: &str = "\x06\x16";

/// Poisoned messages (not JSON, or no delivery tag) that kombu would lose
/// are kept this many at most in herald's own list.
const REJECTED_KEEP: usize = 1000;

/// Takes up to ARGV[2] messages from the lists KEYS[4..], in that order,
/// each from the right (the oldest), and records each taken message in
/// kombu's bookkeeping in the same step: `HSET unacked <tag> [<envelope>,
/// <exchange>, <routing key>]` and `ZADD unacked_index <ARGV[1]> <tag>`.
/// The tag is read from the envelope's `properties` (decoding that object
/// alone: kombu writes it last; the whole envelope when that fails). A
/// message with no tag goes to KEYS[3] (herald's rejected list).
/// Answers one `{list index, envelope, tag or nil}` per message.
const TAKE: &str = r#"
local now, want = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 4, #KEYS do
  if #out >= want then break end
  local items = redis.call('RPOP', KEYS[i], want - #out)
  if items then
    for _, item in ipairs(items) do
      local p = nil
      local props = string.match(item, '"properties"%s*:%s*(%b{})')
      if props then
        local ok, decoded = pcall(cjson.decode, props)
        if ok and type(decoded) == 'table' and type(decoded.delivery_tag) == 'string' then
          p = decoded
        end
      end
      if not p then
        local ok, m = pcall(cjson.decode, item)
        if ok and type(m) == 'table' and type(m.properties) == 'table'
            and type(m.properties.delivery_tag) == 'string' then
          p = m.properties
        end
      end
      if p then
        local di = p.delivery_info
        if type(di) ~= 'table' then di = {} end
        local ex = type(di.exchange) == 'string' and di.exchange or ''
        local rk = type(di.routing_key) == 'string' and di.routing_key or ''
        redis.call('ZADD', KEYS[2], now, p.delivery_tag)
        redis.call('HSET', KEYS[1], p.delivery_tag,
          '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
        out[#out + 1] = {i - 4, item, p.delivery_tag}
      else
        redis.call('LPUSH', KEYS[3], item)
        redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
        out[#out + 1] = {i - 4, item}
      end
    end
  end
end
return out
"#;

/// Acknowledges the tags in ARGV (kombu's `QoS.ack`: ZREM + HDEL).
const ACK: &str = r"
redis.call('ZREM', KEYS[2], unpack(ARGV))
redis.call('HDEL', KEYS[1], unpack(ARGV))
return 0
";

/// Puts one held message back (kombu's `restore_by_tag`): only while
/// `unacked` still holds ARGV[3] for tag ARGV[1] (empty ARGV[3]: holds
/// nothing, an orphan index entry), removes the tag from both structures
/// and pushes ARGV[2] (the envelope marked redelivered) on the consuming
/// end of every list in KEYS[3..]. Answers whether it pushed.
const RESTORE: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if held then return 0 end
elseif held ~= ARGV[3] then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if not held then return 0 end
for i = 3, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[2])
end
return 1
";

/// Refreshes the time of held tags that are still held (ZADD XX), so no
/// restore sweep takes them back while herald still works on them.
const TOUCH: &str = r"
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
return 0
";

/// redis-py's `Lock.release`: delete the mutex only if it is still ours.
const UNLOCK: &str = r"
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
return 1
";

/// Broker key names, with kombu's `global_keyprefix` in front of each.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub queues: Vec<String>,
    steps: Vec<u8>,
}

impl Keys {
    pub fn new(settings: &CelerySettings) -> Keys {
        let mut steps = settings.priority_steps.clone();
        steps.sort_unstable();
        steps.dedup();
        Keys {
            prefix: settings.global_keyprefix.clone(),
            queues: settings.queues.clone(),
            steps,
        }
    }

    pub fn unacked(&self) -> String {
        format!("{}unacked", self.prefix)
    }

    pub fn unacked_index(&self) -> String {
        format!("{}unacked_index", self.prefix)
    }

    fn mutex(&self) -> String {
        format!("{}unacked_mutex", self.prefix)
    }

    /// Herald's own list for messages that cannot be read at all.
    pub fn rejected(&self) -> String {
        format!("{}herald.celery.rejected", self.prefix)
    }

    fn binding(&self, exchange: &str) -> String {
        format!("{}_kombu.binding.{exchange}", self.prefix)
    }

    /// The list of `queue` holding messages of `priority` (kombu's
    /// `_q_for_pri`: the largest step not above it; out of 0..=9 is 0).
    pub fn list(&self, queue: &str, priority: i64) -> String {
        let priority = if (0..=9).contains(&priority) {
            priority as u8
        } else {
            0
        };
        let step = self
            .steps
            .iter()
            .rev()
            .find(|s| **s <= priority)
            .copied()
            .unwrap_or(0);
        match step {
            0 => format!("{}{queue}", self.prefix),
            step => format!("{}{queue}{SEP}{step}", self.prefix),
        }
    }

    /// Every list to take from, in kombu's order: each priority step in
    /// turn, within it the queues from `first` on (round robin).
    pub fn take_order(&self, first: usize) -> Vec<String> {
        let n = self.queues.len().max(1);
        let mut lists = Vec::with_capacity(n * self.steps.len());
        for step in &self.steps {
            for i in 0..self.queues.len() {
                lists.push(self.list(&self.queues[(first + i) % n], i64::from(*step)));
            }
        }
        lists
    }
}

/// One message taken off a list.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The envelope as it was in the list.
    pub raw: Vec<u8>,
    /// kombu's delivery tag; `None`: the message was unreadable and went to
    /// herald's rejected list instead of `unacked`.
    pub tag: Option<String>,
}

/// The broker connection and its scripts.
#[derive(Clone)]
pub struct Broker {
    conn: ConnectionManager,
    pub keys: Keys,
    take: std::sync::Arc<redis::Script>,
    ack: std::sync::Arc<redis::Script>,
    restore: std::sync::Arc<redis::Script>,
    touch: std::sync::Arc<redis::Script>,
    unlock: std::sync::Arc<redis::Script>,
}

/// What a restore sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Messages put back in their queues.
    pub restored: usize,
    /// Held by a consumer for less than its allowance; left alone.
    pub young: usize,
}

/// Unix time in seconds, as kombu scores `unacked_index`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Broker {
    pub async fn connect(settings: &CelerySettings) -> Result<Broker, redis::RedisError> {
        let client = redis::Client::open(settings.broker_url.expose_secret().trim())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let conn = client.get_connection_manager_with_config(config).await?;
        let script = |text| std::sync::Arc::new(redis::Script::new(text));
        Ok(Broker {
            conn,
            keys: Keys::new(settings),
            take: script(TAKE),
            ack: script(ACK),
            restore: script(RESTORE),
            touch: script(TOUCH),
            unlock: script(UNLOCK),
        })
    }

    /// Takes up to `max` messages, lists in [`Keys::take_order`] from queue
    /// `first`; every readable one is then held in `unacked`.
    pub async fn take(&self, max: usize, first: usize) -> Result<Vec<Taken>, redis::RedisError> {
        let mut call = self.take.prepare_invoke();
        call.key(self.keys.unacked())
            .key(self.keys.unacked_index())
            .key(self.keys.rejected());
        for list in self.keys.take_order(first) {
            call.key(list);
        }
        call.arg(unix_now()).arg(max).arg(REJECTED_KEEP);
        let answer: Vec<(i64, Vec<u8>, Option<String>)> =
            call.invoke_async(&mut self.conn.clone()).await?;
        Ok(answer
            .into_iter()
            .map(|(_, raw, tag)| Taken { raw, tag })
            .collect())
    }

    /// Acknowledges `tags`: the messages leave the broker for good.
    pub async fn ack(&self, tags: &[&str]) -> Result<(), redis::RedisError> {
        for chunk in tags.chunks(1000) {
            let mut call = self.ack.prepare_invoke();
            call.key(self.keys.unacked()).key(self.keys.unacked_index());
            for tag in chunk {
                call.arg(*tag);
            }
            let () = call.invoke_async(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    /// Marks `tags` as taken now, if still held (see [`TOUCH`]).
    pub async fn touch(&self, tags: &[&str]) -> Result<(), redis::RedisError> {
        for chunk in tags.chunks(1000) {
            let mut call = self.touch.prepare_invoke();
            call.key(self.keys.unacked_index()).arg(unix_now());
            for tag in chunk {
                call.arg(*tag);
            }
            let () = call.invoke_async(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

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

    fn keys(prefix: &str, queues: &[&str]) -> Keys {
        Keys {
            prefix: prefix.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            steps: vec![0, 3, 6, 9],
        }
    }

    #[test]
    fn lists_follow_kombus_priority_steps() {
        let keys = keys("", &["herald"]);
        let lists: Vec<String> = [0, 2, 3, 5, 6, 8, 9, 10, -1]
            .iter()
            .map(|p| keys.list("herald", *p))
            .collect();
        assert_eq!(
            lists,
            [
                "herald",
                "herald",
                "herald\x06\x163",
                "herald\x06\x163",
                "herald\x06\x166",
                "herald\x06\x166",
                "herald\x06\x169",
                "herald",
                "herald"
            ]
        );
        assert_eq!(
            keys.take_order(0),
            [
                "herald",
                "herald\x06\x163",
                "herald\x06\x166",
                "herald\x06\x169"
            ]
        );
    }

    #[test]
    fn queues_take_turns_within_each_priority_and_keys_carry_the_prefix() {
        let keys = keys("p:", &["a", "b"]);
        assert_eq!(
            keys.take_order(1)[..4],
            ["p:b", "p:a", "p:b\x06\x163", "p:a\x06\x163"]
        );
        assert_eq!(keys.unacked(), "p:unacked");
        assert_eq!(keys.unacked_index(), "p:unacked_index");
        assert_eq!(keys.binding("x"), "p:_kombu.binding.x");
    }

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
