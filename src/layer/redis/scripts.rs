//! The Lua scripts: every step that touches a key more than once runs as one
//! script, so it is atomic on the server and costs one round trip.

use std::sync::LazyLock;

use redis::Script;

/// `send`: prune expired messages, refuse at capacity, add, refresh TTL.
/// KEYS[1] queue; ARGV member, now, expired-before, capacity, expiry.
/// Returns 1 when added, 0 when the queue is full.
pub(super) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[4]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
",
    )
});

/// `group_send`, one call per shard: for each queue key, prune expired
/// messages, then add the copy unless the queue is at its capacity.
/// KEYS queues (n); ARGV members (n), capacities (n), now, expired-before,
/// expiry. Returns how many queues were over capacity.
pub(super) static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS
local now, cutoff, expiry = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local over = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over = over + 1
    end
end
return over
",
    )
});

/// The live members of groups: for each, prune those older than
/// group_expiry, then list the rest in score order. KEYS groups (n);
/// ARGV[1] joined-before. Returns one list per group.
pub(super) static GROUP_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local listed = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    listed[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return listed
",
    )
});

/// Put back what a reader took and did not finish handing over, with the
/// original scores, then empty the backup. KEYS[1] queue, KEYS[2] backup.
pub(super) static RESTORE_INFLIGHT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
return #backed_up / 2
",
    )
});
