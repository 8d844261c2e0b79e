//! The Lua scripts herald runs on apalis-redis's keys, and the key names it
//! builds beyond what `apalis_redis::Config` names: an entry's metadata hash
//! (`<meta>:<id>`, fields `status` and `done_at` in Unix seconds) and a
//! worker's in-flight set (`<inflight>:<worker>`). Matches [`super::APALIS_VERSIONS`].

use std::sync::LazyLock;

use redis::Script;

/// The metadata hash of entry `id` (apalis-redis's `batch_push.lua` and
/// `handle_results.lua` write `status`, `attempts`, `done_at` there).
pub fn meta_key(config: &apalis_redis::Config, id: &str) -> String {
    format!("{}:{id}", config.job_meta_hash())
}

/// The hash herald clears of a forgotten entry's result. apalis-redis
/// 1.0.0 keeps results in the entry's metadata hash (field `result`), which
/// is deleted with it, so nothing is found here; the delete is kept as it was.
pub fn result_hash(config: &apalis_redis::Config) -> String {
    format!("{}:result", config.job_meta_hash())
}

/// The set of entries apalis worker `worker` fetched and still holds (what
/// apalis-redis's `Config::inflight_set_for` names).
pub fn inflight_set(config: &apalis_redis::Config, worker: &str) -> String {
    format!("{}:{worker}", config.inflight_jobs_set())
}

/// One chunk of pruning a done set: for each id whose entry is `Done`
/// since at or before the cutoff, delete its data, result and metadata and
/// leave the done set; an id without metadata only leaves the set. KEYS
/// done set, data hash, metadata prefix; ARGV cutoff, ids. Returns how
/// many entries were deleted.
pub(crate) static PRUNE_DONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local cutoff = tonumber(ARGV[1])
local pruned = 0
for i = 2, #ARGV do
    local id = ARGV[i]
    local meta = KEYS[3] .. ":" .. id
    local status = redis.call("hget", meta, "status")
    local done_at = tonumber(redis.call("hget", meta, "done_at"))
    if status == "Done" and done_at and done_at <= cutoff then
        redis.call("hdel", KEYS[2], id)
        redis.call("hdel", KEYS[3] .. ":result", id)
        redis.call("del", meta)
        redis.call("srem", KEYS[1], id)
        pruned = pruned + 1
    elseif not status then
        redis.call("srem", KEYS[1], id)
    end
end
return pruned"#,
    )
});

/// apalis-redis's own re-enqueue of a dead worker's entries
/// (`reenqueue_orphaned.lua`), for a worker that is stopping: its in-flight
/// set goes back to the head of the active list (in chunks, under Lua's
/// unpack limit) and fetchers are signalled. KEYS in-flight set, active
/// list, signal list. Returns how many moved.
pub(crate) static PUT_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local held = redis.call("smembers", KEYS[1])
for i = 1, #held, 1000 do
    redis.call("lpush", KEYS[2], unpack(held, i, math.min(i + 999, #held)))
end
redis.call("del", KEYS[1])
if #held > 0 then
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return #held"#,
    )
});

/// What apalis-redis's `fetch_next.lua` does with due entries, one chunk at
/// a time: up to ARGV[2] ids due by ARGV[1] (Unix seconds) move from the
/// scheduled set KEYS[1] to the active list KEYS[2]. Returns how many moved.
pub(crate) static PROMOTE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local due = redis.call("zrangebyscore", KEYS[1], 0, ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
if #due > 0 then
    redis.call("rpush", KEYS[2], unpack(due))
    redis.call("zrem", KEYS[1], unpack(due))
end
return #due"#,
    )
});
