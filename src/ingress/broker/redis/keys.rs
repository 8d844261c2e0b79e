//! kombu's Redis key names: `unacked`, `unacked_index`, the restore
//! mutex and exchange bindings under `global_keyprefix`, and each queue's
//! list per priority step, taken in kombu's order.

use crate::config::CelerySettings;

/// kombu's separator between a queue name and its priority step.
pub const SEP: &str = "\x06\x16";

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

    pub(super) fn mutex(&self) -> String {
        format!("{}unacked_mutex", self.prefix)
    }

    /// Herald's own list for messages that cannot be read at all.
    pub fn rejected(&self) -> String {
        format!("{}herald.celery.rejected", self.prefix)
    }

    pub(super) fn binding(&self, exchange: &str) -> String {
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

    /// Every list of `queue`, one per priority step.
    pub fn lists_of(&self, queue: &str) -> Vec<String> {
        let mut lists: Vec<String> = (0..=9).map(|priority| self.list(queue, priority)).collect();
        lists.dedup();
        lists
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
