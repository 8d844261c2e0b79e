//! The Lua scripts of herald's Redis broker room, each doing one of
//! kombu's bookkeeping steps atomically: take a batch and hold it in
//! `unacked`, acknowledge, put one message back, refresh what is held, and
//! release the restore mutex.

/// Takes up to ARGV[2] messages from the lists KEYS[4..], in that order,
/// each from the right (the oldest), and records each taken message in
/// kombu's bookkeeping in the same step: `HSET unacked <tag> [<envelope>,
/// <exchange>, <routing key>]` and `ZADD unacked_index <ARGV[1]> <tag>`.
/// The tag is read from the envelope's `properties` (decoding that object
/// alone: kombu writes it last; the whole envelope when that fails). A
/// message with no tag goes to KEYS[3] (herald's rejected list).
/// Answers one `{list index, envelope, tag or nil}` per message.
pub(super) const TAKE: &str = r#"
local now, want = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 4, #KEYS do
  if #out >= want then break end
  local items = redis.call('RPOP', KEYS[i], want - #out)
  if items then
    for _, item in ipairs(items) do
      local p = nil
      local props = string.match(item, '"properties"%s*:%s*(%b{})')
      if props then
        local ok, decoded = pcall(cjson.decode, props)
        if ok and type(decoded) == 'table' and type(decoded.delivery_tag) == 'string' then
          p = decoded
        end
      end
      if not p then
        local ok, m = pcall(cjson.decode, item)
        if ok and type(m) == 'table' and type(m.properties) == 'table'
            and type(m.properties.delivery_tag) == 'string' then
          p = m.properties
        end
      end
      if p then
        local di = p.delivery_info
        if type(di) ~= 'table' then di = {} end
        local ex = type(di.exchange) == 'string' and di.exchange or ''
        local rk = type(di.routing_key) == 'string' and di.routing_key or ''
        redis.call('ZADD', KEYS[2], now, p.delivery_tag)
        redis.call('HSET', KEYS[1], p.delivery_tag,
          '[' .. item .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
        out[#out + 1] = {i - 4, item, p.delivery_tag}
      else
        redis.call('LPUSH', KEYS[3], item)
        redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
        out[#out + 1] = {i - 4, item}
      end
    end
  end
end
return out
"#;

/// Acknowledges the tags in ARGV (kombu's `QoS.ack`: ZREM + HDEL).
pub(super) const ACK: &str = r"
redis.call('ZREM', KEYS[2], unpack(ARGV))
redis.call('HDEL', KEYS[1], unpack(ARGV))
return 0
";

/// Puts one held message back (kombu's `restore_by_tag`): only while
/// `unacked` still holds ARGV[3] for tag ARGV[1] (empty ARGV[3]: holds
/// nothing, an orphan index entry), removes the tag from both structures
/// and pushes ARGV[2] (the envelope marked redelivered) on the consuming
/// end of every list in KEYS[3..]. Answers whether it pushed.
pub(super) const RESTORE: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '' then
  if held then return 0 end
elseif held ~= ARGV[3] then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if not held then return 0 end
for i = 3, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[2])
end
return 1
";

/// Refreshes the time of held tags that are still held (ZADD XX), so no
/// restore sweep takes them back while herald still works on them.
pub(super) const TOUCH: &str = r"
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
return 0
";

/// redis-py's `Lock.release`: delete the mutex only if it is still ours.
pub(super) const UNLOCK: &str = r"
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
return 1
";
