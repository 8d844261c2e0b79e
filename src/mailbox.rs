//! A bounded, single-consumer queue that allocates nothing while empty:
//! each WebSocket connection holds two (its layer channel's buffer and its
//! outbound queue), and tokio's `mpsc` allocates a block of 32 slots per
//! channel up front, several KiB per idle connection. Here memory follows
//! what is queued, and a queue that emptied after a burst gives it back.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// Why an item was not queued; it comes back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<T> {
    Full(T),
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Items meant for this mailbox were dropped elsewhere (a layer lost
    /// them); the next [`Mailbox::next`] says so before any item.
    lost: bool,
}

/// What [`Mailbox::next`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<T> {
    Item(T),
    /// Items were lost since the last call: read them elsewhere.
    Lost,
}

pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// An item arrived, or the mailbox closed.
    ready: Notify,
    /// Room was made, or the mailbox closed.
    room: Notify,
}

/// A drained queue keeps at most this much room for the next item.
const KEEP: usize = 8;

impl<T> Mailbox<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                lost: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues `item` unless the mailbox is full or closed.
    pub(crate) fn try_send(&self, item: T) -> Result<(), Refused<T>> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed(item));
        }
        if state.items.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting up to `wait` for room.
    pub(crate) async fn send_timeout(&self, item: T, wait: Duration) -> Result<(), Refused<T>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut item = item;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Err(Refused::Full(back)) => item = back,
                other => return other,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Refused::Full(item));
            }
        }
    }

    /// The next item; `None` once closed and drained.
    pub(crate) async fn recv(&self) -> Option<T> {
        loop {
            match self.next().await? {
                Next::Item(item) => return Some(item),
                Next::Lost => continue,
            }
        }
    }

    /// The next item, or word that items were lost (before any item);
    /// `None` once closed and drained.
    pub(crate) async fn next(&self) -> Option<Next<T>> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = self.state();
                if std::mem::take(&mut state.lost) {
                    return Some(Next::Lost);
                }
                if let Some(item) = state.items.pop_front() {
                    if state.items.is_empty() && state.items.capacity() > KEEP {
                        state.items.shrink_to(KEEP);
                    }
                    drop(state);
                    self.room.notify_one();
                    return Some(Next::Item(item));
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Notes that items meant for this mailbox were lost; its receiver
    /// hears [`Next::Lost`] next.
    pub(crate) fn mark_lost(&self) {
        self.state().lost = true;
        self.ready.notify_one();
    }

    /// Refuses further items; `recv` drains what is queued, then ends.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.ready.notify_waiters();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_order_and_closes() {
        let mailbox = Mailbox::new(2);
        assert_eq!(mailbox.try_send(1), Ok(()));
        assert_eq!(mailbox.try_send(2), Ok(()));
        assert_eq!(mailbox.try_send(3), Err(Refused::Full(3)));
        let late = mailbox.send_timeout(4, Duration::from_millis(20)).await;
        assert_eq!(late, Err(Refused::Full(4)), "no room in time");
        assert_eq!(mailbox.recv().await, Some(1));
        assert_eq!(
            mailbox.send_timeout(5, Duration::from_millis(20)).await,
            Ok(())
        );
        mailbox.close();
        assert_eq!(mailbox.try_send(6), Err(Refused::Closed(6)));
        assert_eq!(mailbox.recv().await, Some(2));
        assert_eq!(mailbox.recv().await, Some(5));
        assert_eq!(mailbox.recv().await, None);
    }

    #[tokio::test]
    async fn lost_items_are_told_first() {
        let mailbox = Mailbox::new(4);
        mailbox.try_send(1).unwrap();
        mailbox.mark_lost();
        assert_eq!(mailbox.next().await, Some(Next::Lost));
        assert_eq!(mailbox.next().await, Some(Next::Item(1)));
        mailbox.mark_lost();
        mailbox.close();
        assert_eq!(mailbox.next().await, Some(Next::Lost));
        assert_eq!(mailbox.next().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let mailbox = std::sync::Arc::new(Mailbox::new(4));
        let receiver = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.recv().await })
        };
        tokio::task::yield_now().await;
        mailbox.try_send("hello").unwrap();
        assert_eq!(receiver.await.unwrap(), Some("hello"));
    }

    #[test]
    fn a_drained_mailbox_gives_its_room_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mailbox = Mailbox::new(1000);
        for n in 0..500 {
            mailbox.try_send(n).unwrap();
        }
        runtime.block_on(async {
            for _ in 0..500 {
                mailbox.recv().await;
            }
        });
        assert!(mailbox.state().items.capacity() <= KEEP);
    }
}
