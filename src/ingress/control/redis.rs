//! Celery's remote control on kombu's Redis transport. A broadcast to the
//! fanout exchange `celery.pidbox` is a `PUBLISH` on the channel
//! `/<db>.celery.pidbox` (kombu's fanout prefix, after `global_keyprefix`),
//! carrying kombu's JSON envelope with the command base64-encoded in
//! `body`. The reply goes to the direct exchange named in `reply_to`: kombu
//! routes a direct publish by the exchange's binding set
//! (`_kombu.binding.<exchange>`, members `routing key \x06\x16 pattern
//! \x06\x16 queue`) and pushes the envelope onto each bound queue's list,
//! where the caller's `BRPOP` waits, the ticket in its headers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Command, Node};
use crate::config::CelerySettings;
use crate::retry::Backoff;

/// kombu's separator inside a binding member.
const SEP: &str = "\x06\x16";

/// Listens for broadcasts and answers them until `stop`, connecting again
/// with backoff when Redis goes.
pub async fn listen(node: Arc<Node>, settings: CelerySettings, stop: CancellationToken) {
    let url = settings.broker_url.expose_secret().trim().to_string();
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "Celery's remote control: bad broker URL");
            return;
        }
    };
    let db = client.get_connection_info().redis_settings().db();
    let prefix = settings.global_keyprefix.clone();
    let topic = format!("{prefix}/{db}.celery.pidbox");
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&topic).await?;
            let replies = client
                .get_connection_manager_with_config(crate::ingress::redis_timeouts())
                .await?;
            Ok::<_, redis::RedisError>((pubsub, replies))
        };
        let (mut pubsub, replies) = match connected.await {
            Ok(both) => both,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, backoff = ?wait, "Celery's remote control could not subscribe; trying again");
                if !crate::ingress::pause(wait, &stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        tracing::info!(
            node = node.name,
            channel = topic,
            "answering Celery's remote control"
        );
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = stop.cancelled() => return,
            };
            let Some(message) = message else { break };
            let payload: Vec<u8> = message.get_payload_bytes().to_vec();
            let Some(command) = command_of(&payload) else {
                tracing::debug!("a remote-control message herald cannot read");
                continue;
            };
            let Some(answer) = node.respond(&command).await else {
                continue;
            };
            if let Some((exchange, routing_key)) = &command.reply_to {
                let reply = Reply {
                    prefix: &prefix,
                    exchange,
                    routing_key,
                    ticket: command.ticket.as_deref().unwrap_or_default(),
                };
                if let Err(error) = reply.send(&mut replies.clone(), &answer).await {
                    tracing::warn!(%error, method = command.method, "could not reply to Celery's remote control");
                }
            }
        }
        tracing::warn!("Celery's remote control lost its subscription; subscribing again");
    }
}

/// The command a published envelope carries; none when it is unreadable.
/// (Its `expires` header is ignored, as Celery's nodes ignore it: a node's
/// clock running ahead must not drop commands.)
fn command_of(payload: &[u8]) -> Option<Command> {
    let envelope: Value = serde_json::from_slice(payload).ok()?;
    let body = envelope["body"].as_str()?;
    let body = if envelope["properties"]["body_encoding"] == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?
    } else {
        body.as_bytes().to_vec()
    };
    Command::parse(&serde_json::from_slice(&body).ok()?)
}

/// Where one reply goes.
struct Reply<'a> {
    prefix: &'a str,
    exchange: &'a str,
    routing_key: &'a str,
    ticket: &'a str,
}

impl Reply<'_> {
    /// Pushes `answer`, in kombu's envelope, onto each queue bound to the
    /// reply exchange by the routing key.
    async fn send(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        answer: &Value,
    ) -> Result<(), redis::RedisError> {
        let binding = format!("{}_kombu.binding.{}", self.prefix, self.exchange);
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&binding)
            .query_async(conn)
            .await?;
        let envelope = self.envelope(answer).to_string();
        for member in members {
            let mut parts = member.split(SEP);
            let (Some(key), Some(_), Some(queue)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if key == self.routing_key {
                redis::cmd("LPUSH")
                    .arg(format!("{}{queue}", self.prefix))
                    .arg(&envelope)
                    .query_async::<()>(conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// kombu's envelope of a reply, as a Celery worker's looks.
    fn envelope(&self, answer: &Value) -> Value {
        let body = base64::engine::general_purpose::STANDARD.encode(answer.to_string());
        json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"ticket": self.ticket, "clock": 0},
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": self.exchange, "routing_key": self.routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": uuid::Uuid::new_v4().to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_ping_is_read() {
        // A real `app.control.ping()` broadcast, as kombu 5.7 published it.
        let body = "eyJtZXRob2QiOiAicGluZyIsICJhcmd1bWVudHMiOiB7fSwgImRlc3RpbmF0aW9uIjogbnVsbCwgInBhdHRlcm4iOiBudWxsLCAibWF0Y2hlciI6IG51bGwsICJ0aWNrZXQiOiAiN2ExNDhjZmQtZjQ0OS00NTQ2LTkxMTktZTJkMjQwMzQ2MDQ1IiwgInJlcGx5X3RvIjogeyJleGNoYW5nZSI6ICJyZXBseS5jZWxlcnkucGlkYm94IiwgInJvdXRpbmdfa2V5IjogIjQ5YWQ3ZWEzLTQ4ODctMzg3Yi04NTQyLTc4MzJmYjk4NzI3OCJ9fQ==";
        let envelope = |expires: f64| {
            json!({
                "body": body, "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"clock": 1, "expires": expires},
                "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                    "priority": 0, "body_encoding": "base64", "delivery_tag": "a6413457"},
            })
            .to_string()
        };
        let later = crate::ingress::broker::redis::unix_now() + 60.0;
        let command = command_of(envelope(later).as_bytes()).expect("read");
        assert_eq!(command.method, "ping");
        assert_eq!(
            command.reply_to,
            Some((
                "reply.celery.pidbox".into(),
                "49ad7ea3-4887-387b-8542-7832fb987278".into()
            ))
        );
        assert_eq!(
            command.ticket.as_deref(),
            Some("7a148cfd-f449-4546-9119-e2d240346045")
        );
        assert!(
            command_of(envelope(1.0).as_bytes()).is_some(),
            "expires is ignored"
        );
        assert!(command_of(b"not json").is_none());
    }
}
