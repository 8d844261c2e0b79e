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
//!
//! Parts: `keys` (names), `scripts` (Lua), `restore` (putting messages
//! back, and the sweep), and the connection with its take, acknowledge and
//! touch here.

mod keys;
mod restore;
mod scripts;

use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;

pub use keys::{Keys, SEP};
pub use restore::Swept;

use crate::config::CelerySettings;
use scripts::{ACK, RESTORE, TAKE, TOUCH, UNLOCK};

/// Poisoned messages (not JSON, or no delivery tag) that kombu would lose
/// are kept this many at most in herald's own list.
const REJECTED_KEEP: usize = 1000;

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
pub struct RedisBroker {
    conn: ConnectionManager,
    pub keys: Keys,
    take: std::sync::Arc<redis::Script>,
    ack: std::sync::Arc<redis::Script>,
    restore: std::sync::Arc<redis::Script>,
    touch: std::sync::Arc<redis::Script>,
    unlock: std::sync::Arc<redis::Script>,
}

/// Unix time in seconds, as kombu scores `unacked_index`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl RedisBroker {
    pub async fn connect(settings: &CelerySettings) -> Result<RedisBroker, redis::RedisError> {
        let client = redis::Client::open(settings.broker_url.expose_secret().trim())?;
        let conn = client
            .get_connection_manager_with_config(crate::ingress::redis_timeouts())
            .await?;
        let script = |text| std::sync::Arc::new(redis::Script::new(text));
        Ok(RedisBroker {
            conn,
            keys: Keys::new(settings),
            take: script(TAKE),
            ack: script(ACK),
            restore: script(RESTORE),
            touch: script(TOUCH),
            unlock: script(UNLOCK),
        })
    }

    /// Messages waiting in `queue`: the lengths of its lists.
    pub async fn waiting(&self, queue: &str) -> Result<u64, redis::RedisError> {
        let mut pipe = redis::pipe();
        for list in self.keys.lists_of(queue) {
            pipe.llen(list);
        }
        let lengths: Vec<u64> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(lengths.into_iter().sum())
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
}
