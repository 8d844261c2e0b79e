//! Channel and group name rules, as channels' `BaseChannelLayer` enforces
//! them, and channel-capacity lookup by glob pattern.

use std::sync::LazyLock;

use globset::{Glob, GlobMatcher};
use regex::Regex;

use super::LayerError;
use crate::config::ChannelCapacity;

/// Names must be shorter than this (channels' `MAX_NAME_LENGTH`).
pub const MAX_NAME_LENGTH: usize = 100;

static CHANNEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$").expect("valid regex"));
static GROUP_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z\d\-_.]+$").expect("valid regex"));

pub fn check_channel_name(name: &str) -> Result<(), LayerError> {
    if name.len() < MAX_NAME_LENGTH && CHANNEL_NAME.is_match(name) {
        Ok(())
    } else {
        Err(LayerError::InvalidChannelName(name.to_string()))
    }
}

pub fn check_group_name(name: &str) -> Result<(), LayerError> {
    if name.len() < MAX_NAME_LENGTH && GROUP_NAME.is_match(name) {
        Ok(())
    } else {
        Err(LayerError::InvalidGroupName(name.to_string()))
    }
}

/// The part of a process-local channel name up to and including `!`; all
/// channels of one process share it (and, on Redis, one queue key).
pub fn non_local_name(channel: &str) -> &str {
    match channel.find('!') {
        Some(i) => &channel[..=i],
        None => channel,
    }
}

/// Capacity per channel: the first matching pattern's, else the default.
#[derive(Debug, Clone)]
pub struct Capacities {
    default: usize,
    patterns: Vec<(GlobMatcher, usize)>,
}

impl Capacities {
    /// Patterns were validated with the configuration; a bad one here is an
    /// error all the same.
    pub fn new(default: usize, entries: &[ChannelCapacity]) -> Result<Self, LayerError> {
        let patterns = entries
            .iter()
            .map(|e| {
                Glob::new(&e.pattern)
                    .map(|g| (g.compile_matcher(), e.capacity))
                    .map_err(|err| LayerError::Config(err.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { default, patterns })
    }

    pub fn for_channel(&self, channel: &str) -> usize {
        self.patterns
            .iter()
            .find(|(glob, _)| glob.is_match(channel))
            .map_or(self.default, |(_, capacity)| *capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_channels_rules() {
        for ok in ["foo", "specific.abc!def", "a-b_c.d", "specific.x!"] {
            assert!(check_channel_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(100);
        for bad in ["", "has space", "a!b!c", "ü", long.as_str(), "x:y"] {
            assert!(check_channel_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names_have_no_bang() {
        assert!(check_group_name("notifications_42").is_ok());
        assert!(check_group_name("a!b").is_err());
        assert!(check_group_name(&"g".repeat(99)).is_ok());
        assert!(check_group_name(&"g".repeat(100)).is_err());
    }

    #[test]
    fn non_local_name_keeps_the_bang() {
        assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
        assert_eq!(non_local_name("general"), "general");
    }

    #[test]
    fn first_matching_pattern_wins() {
        let entries = [
            ChannelCapacity {
                pattern: "http.response!*".into(),
                capacity: 10,
            },
            ChannelCapacity {
                pattern: "http.*".into(),
                capacity: 20,
            },
        ];
        let caps = Capacities::new(100, &entries).unwrap();
        assert_eq!(caps.for_channel("http.response!abc"), 10);
        assert_eq!(caps.for_channel("http.request"), 20);
        assert_eq!(caps.for_channel("other"), 100);
    }
}
