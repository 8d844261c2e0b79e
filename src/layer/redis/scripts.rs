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
/// messages, then add the copy unless the queue is at its capacity. With
/// holding on, a copy that finds its queue full, or finds this process
/// already holding copies for it (its hold key exists), is not added:
/// the hold key's counter numbers it, so the holder places the copies
/// back in the order Redis saw them. A copy's score is after the queue's
/// newest, so a reader pops in the order copies were added.
/// KEYS queues (n), hold keys (n); ARGV members (n), capacities (n), now,
/// expired-before, expiry, hold (1 or 0), hold key lifetime (s).
/// Returns one answer per queue: 0 added, > 0 held with that number, -1
/// dropped (holding off).
pub(super) static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS / 2
local now, cutoff, expiry = tonumber(ARGV[2 * n + 1]), ARGV[2 * n + 2], ARGV[2 * n + 3]
local hold, hold_ttl = ARGV[2 * n + 4] == '1', ARGV[2 * n + 5]
local answers = {}
for i = 1, n do
    local queue, held = KEYS[i], KEYS[n + i]
    if hold and redis.call('EXISTS', held) == 1 then
        answers[i] = redis.call('INCR', held)
        redis.call('EXPIRE', held, hold_ttl)
    else
        redis.call('ZREMRANGEBYSCORE', queue, 0, cutoff)
        if redis.call('ZCOUNT', queue, '-inf', '+inf') < tonumber(ARGV[n + i]) then
            local score = now
            local newest = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')
            if newest[2] and tonumber(newest[2]) >= score then
                score = tonumber(newest[2]) + 0.000001
            end
            redis.call('ZADD', queue, score, ARGV[i])
            redis.call('EXPIRE', queue, expiry)
            answers[i] = 0
        elseif hold then
            answers[i] = redis.call('INCR', held)
            redis.call('EXPIRE', held, hold_ttl)
        else
            answers[i] = -1
        end
    end
end
return answers
",
    )
});

/// Places copies this process held for one queue, oldest first, while the
/// queue has room; when every copy it knows of is placed (the hold key's
/// counter is still the last number it was told), drops the hold key, so
/// live copies are added directly again. KEYS[1] queue, KEYS[2] hold key;
/// ARGV capacity, now, expired-before, expiry, last number, members...
/// Returns how many members were placed.
pub(super) static PLACE_HELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local capacity, now, cutoff, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, cutoff)
local room = capacity - redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local score = now
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= score then
    score = tonumber(newest[2])
end
local placed = 0
for i = 6, #ARGV do
    if placed >= room then
        break
    end
    score = score + 0.000001
    redis.call('ZADD', KEYS[1], score, ARGV[i])
    placed = placed + 1
end
if placed > 0 then
    redis.call('EXPIRE', KEYS[1], expiry)
end
if placed == #ARGV - 5 and redis.call('GET', KEYS[2]) == ARGV[5] then
    redis.call('DEL', KEYS[2])
end
return placed
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
