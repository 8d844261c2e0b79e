//! Reading again from the database what a connection may lack: a client's
//! own resume from its last seen id (one page), and the server's resync
//! after the channel layer lost live messages (every page, from where the
//! layer says the loss began, not from the newest id sent: live messages
//! arrive out of id order when batches commit in parallel). Rows already
//! sent on the connection are skipped.

use std::collections::BTreeMap;

use super::{Connection, End};
use crate::layer::Loss;
use crate::payload::NotificationPayload;
use crate::sidecar::protocol::{Resumed, ServerEvent, error_event};
use crate::store::Position;

/// Ids this connection already sent, so a notification reaching it both
/// from the database (a replay) and live is sent once. Kept as runs of
/// consecutive ids (a burst to one user is mostly one run); bounded by
/// runs, the lowest forgotten first.
pub(super) struct SentIds {
    /// First id of each run -> its last id.
    runs: BTreeMap<i64, i64>,
    capacity: usize,
}

impl SentIds {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            runs: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The run holding `id`, if any: its first id.
    fn run_of(&self, id: i64) -> Option<i64> {
        self.runs
            .range(..=id)
            .next_back()
            .filter(|(_, last)| **last >= id)
            .map(|(first, _)| *first)
    }

    /// Records `id`; false when it was already there.
    pub(super) fn insert(&mut self, id: i64) -> bool {
        if self.run_of(id).is_some() {
            return false;
        }
        let mut first = id;
        let mut last = id;
        if let Some((&before, &end)) = self.runs.range(..id).next_back()
            && end == id - 1
        {
            first = before;
        }
        if let Some(after) = id.checked_add(1)
            && let Some(end) = self.runs.remove(&after)
        {
            last = end;
        }
        self.runs.insert(first, last);
        if self.runs.len() > self.capacity {
            self.runs.pop_first();
        }
        true
    }

    pub(super) fn contains(&self, id: i64) -> bool {
        self.run_of(id).is_some()
    }
}

impl Connection {
    /// The server's own replay after `loss`: every row from where it
    /// began, all pages, then one `resumed` with `resync: true`. Dropped
    /// copies of rows this connection already sent (a replay outran their
    /// live copies) need nothing.
    pub(super) async fn resync(&mut self, loss: Loss) -> Result<(), End> {
        let lookback = chrono::TimeDelta::from_std(self.state.0.settings.resume_lookback)
            .unwrap_or(chrono::TimeDelta::MAX);
        let since = |at: f64| chrono::DateTime::from_timestamp_micros((at * 1e6) as i64);
        let from_id = if loss.overflow {
            loss.from_id
        } else {
            loss.ids
                .iter()
                .filter(|id| !self.sent.contains(**id))
                .min()
                .copied()
        };
        let position = match (from_id, loss.since) {
            (None, None) if loss.from_id.is_some() => return Ok(()),
            (Some(id), None) => Position::From(id),
            (from_id, at) => Position::Lost {
                from_id,
                // A loss that names nothing reaches back to the connection's start.
                since: Some(at.and_then(since).unwrap_or(self.connected_at - lookback)),
            },
        };
        self.replay(position, true).await
    }

    /// Sends what the user missed after `position` from the database
    /// (see [`crate::store::Position`]), oldest id first, skipping ids
    /// already sent, then `{"type": "resumed", "data": {count, last_id,
    /// more, recovered, resync}}`. A client's resume is one page of at most
    /// `replay_limit` past its position (`more` asks it to resume again); a
    /// resync (`resync`: the server's own, for live messages the layer may
    /// have lost) reads every page before answering once.
    pub(super) async fn replay(&mut self, position: Position, resync: bool) -> Result<(), End> {
        let mut position = position;
        let mut answer = Resumed {
            count: 0,
            last_id: 0,
            more: false,
            recovered: true,
            resync,
        };
        loop {
            let Some(page) = self.replay_page(position).await? else {
                return self.queue(error_event(
                    "could not load missed notifications; send resume again",
                ));
            };
            answer.count += page.count;
            answer.last_id = page.last_id;
            answer.more = page.more;
            answer.recovered &= page.recovered;
            if !(resync && page.more) {
                break;
            }
            position = Position::From(page.last_id + 1);
        }
        self.queue_wait(ServerEvent::Resumed(answer).to_text())
            .await
    }

    /// One page of [`Connection::replay`]: its rows sent, its summary
    /// answered (`None` when the database could not be read).
    async fn replay_page(&mut self, position: Position) -> Result<Option<Resumed>, End> {
        let shared = self.state.0.clone();
        let settings = &shared.settings;
        let lookback =
            chrono::TimeDelta::from_std(settings.resume_lookback).unwrap_or(chrono::TimeDelta::MAX);
        let missed = match shared
            .store
            .missed_notifications(self.user_id, position, lookback, settings.replay_limit)
            .await
        {
            Ok(missed) => missed,
            Err(error) => {
                tracing::error!(user_id = self.user_id, %error, "sidecar: reading missed notifications failed");
                return Ok(None);
            }
        };
        let mut count = 0u64;
        let mut last = match position {
            Position::After(id) => id,
            Position::From(id) => id - 1,
            Position::Lost { .. } => 0,
        };
        if let Position::After(id) = position
            && id > 0
        {
            // The client has its position's row: never send it again.
            self.sent.insert(id);
        }
        for row in &missed.rows {
            last = last.max(row.id);
            if !self.sent.insert(row.id) {
                continue;
            }
            let payload = NotificationPayload::from(row);
            self.queue_wait(ServerEvent::Notification(payload).to_text())
                .await?;
            count += 1;
        }
        shared.metrics.notifications_replayed.increment(count);
        Ok(Some(Resumed {
            count,
            last_id: last,
            more: missed.more,
            recovered: missed.recovered,
            resync: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_ids_join_runs_and_forget_the_lowest() {
        let mut sent = SentIds::new(2);
        assert!(sent.insert(5));
        assert!(!sent.insert(5));
        assert!(sent.insert(7));
        assert!(sent.insert(6), "joins 5 and 7 into one run");
        assert_eq!(sent.runs.len(), 1);
        assert!(sent.contains(5) && sent.contains(6) && sent.contains(7));
        assert!(sent.insert(1));
        assert!(sent.insert(3));
        assert!(!sent.contains(1), "three runs: the lowest is forgotten");
        assert!(sent.contains(3) && sent.contains(7));
        assert!(!sent.contains(4) && !sent.contains(8));
    }
}
