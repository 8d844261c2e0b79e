//! Redis key names and shard choice, exactly as channels_redis makes them.
//!
//! - queue key: `<prefix><non-local channel name>` (`asgispecific.ab12…!`)
//! - in-flight backup of a queue: `<queue key>$inflight`
//! - herald's own: the mark that one layer instance holds copies back for a
//!   full queue, `<queue key>$held:<client prefix>` (see `held`)
//! - group key: `<prefix>:group:<group>` (`asgi:group:notifications_42`)
//! - shard: `int((crc32(name) & 0xFFF) / (4096 / hosts))`

use crate::layer::names::non_local_name;

/// Key of the sorted set holding `channel`'s messages (shared by every
/// channel of one process).
pub fn queue_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}{}", non_local_name(channel))
}

pub fn inflight_key(queue_key: &str) -> String {
    format!("{queue_key}$inflight")
}

/// The mark (and counter) of the copies the layer instance `client`
/// holds for `queue_key`.
pub fn held_key(queue_key: &str, client: &str) -> String {
    format!("{queue_key}$held:{client}")
}

pub fn group_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:group:{group}")
}

/// channels_redis's `_consistent_hash`: CRC-32 folded to 0..4095, then
/// divided into `hosts` equal ranges (floating-point, truncated).
pub fn consistent_hash(name: &str, hosts: usize) -> usize {
    if hosts <= 1 {
        return 0;
    }
    let bucket = crc32fast::hash(name.as_bytes()) & 0xFFF;
    let divisor = 4096.0 / hosts as f64;
    ((f64::from(bucket) / divisor) as usize).min(hosts - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_match_channels_redis() {
        assert_eq!(queue_key("asgi", "specific.abc!def"), "asgispecific.abc!");
        assert_eq!(queue_key("asgi", "general"), "asgigeneral");
        assert_eq!(
            inflight_key("asgispecific.abc!"),
            "asgispecific.abc!$inflight"
        );
        assert_eq!(
            group_key("asgi", "notifications_42"),
            "asgi:group:notifications_42"
        );
    }

    #[test]
    fn consistent_hash_matches_python() {
        // binascii.crc32(b"notifications_42") & 0xFFF == 0x759 == 1881;
        // 1881 / 2048 = 0.92 -> 0; 1881 / 1365.3 = 1.38 -> 1.
        assert_eq!(crc32fast::hash(b"notifications_42") & 0xFFF, 1881);
        assert_eq!(consistent_hash("notifications_42", 1), 0);
        assert_eq!(consistent_hash("notifications_42", 2), 0);
        assert_eq!(consistent_hash("notifications_42", 3), 1);
    }
}
