//! The Lua scripts of the queue. Each one touches a bounded number of ids
//! (a batch or a chunk), never a whole set: apalis-redis's `fetch_next.lua`
//! unpacks every due id at once and fails for good past ~8,000 of them.
//!
//! Keys of a job type, all under `{namespace}:queue:{QUEUE}:{NAME}`:
//! `ready` (LIST, pushed left, popped right), `delayed` (ZSET id → due ms),
//! `inflight` (ZSET id → lease deadline ms), `data` (HASH id → envelope JSON),
//! `attempts` (HASH id → runs started), `dead` (ZSET id → died ms),
//! `errors` (HASH id → last error of a dead job). `wake` is the pub/sub
//! channel announcing that `ready` stopped being empty.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: data, attempts, dead, errors, ready. ARGV: wake channel, then
/// (id, payload) pairs. An id that is already queued, delayed or running is
/// left alone (pushing it again would run it twice); a dead one is revived
/// with a fresh attempt count. Returns how many ids were queued.
pub static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local queued = 0
local len = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local live = redis.call('HEXISTS', KEYS[1], id) == 1
    and redis.call('ZSCORE', KEYS[3], id) == false
  if not live then
    redis.call('HSET', KEYS[1], id, ARGV[i + 1])
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    len = redis.call('LPUSH', KEYS[5], id)
    queued = queued + 1
  end
end
-- Only an empty list can have idle workers waiting on it: busy workers
-- fetch again by themselves until they see it empty.
if queued > 0 and len == queued then
  redis.call('PUBLISH', ARGV[1], '1')
end
return queued
"#,
    )
});

/// KEYS: ready, delayed, inflight, data, attempts. ARGV: now ms, lease
/// deadline ms, batch size, promote limit. Moves at most `promote limit` due
/// delayed ids to the consuming end of `ready`, then claims up to `batch`
/// ids: counts the attempt (here, because a crashed worker never reports
/// back) and leases them. Returns flat (id, attempt, payload) triples.
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  redis.call('RPUSH', KEYS[1], unpack(due))
end
local ids = redis.call('RPOP', KEYS[1], tonumber(ARGV[3]))
if not ids then
  return {}
end
local out = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[4], id)
  -- No payload: the job finished elsewhere (e.g. it was reclaimed after a
  -- stall and its first run completed); drop the stale id.
  if payload then
    local attempt = redis.call('HINCRBY', KEYS[5], id, 1)
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = payload
  end
end
return out
"#,
    )
});

/// KEYS: inflight, data, attempts, delayed, dead, errors. ARGV: now ms,
/// then (id, kind, due ms, error) quads; kind `d` done, `r` retry at due,
/// `x` dead. Done jobs are deleted outright so Redis does not grow with
/// completed work; dead ones are kept (and trimmed by `TRIM_DEAD`).
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  local kind = ARGV[i + 1]
  local held = redis.call('ZREM', KEYS[1], id)
  if kind == 'd' then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  elseif kind == 'r' then
    -- Not held any more: the lease expired and the job was requeued, so
    -- another run owns it now.
    if held == 1 then
      redis.call('ZADD', KEYS[4], ARGV[i + 2], id)
    end
  else
    redis.call('ZADD', KEYS[5], ARGV[1], id)
    redis.call('HSET', KEYS[6], id, ARGV[i + 3])
  end
end
return 1
"#,
    )
});

/// KEYS: inflight, attempts, ready. ARGV: wake channel, ids. Gives back
/// claimed jobs that never started (graceful shutdown) without counting an
/// attempt, at the consuming end so they run next.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local len = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HINCRBY', KEYS[2], id, -1)
    len = redis.call('RPUSH', KEYS[3], id)
    n = n + 1
  end
end
if n > 0 and len == n then
  redis.call('PUBLISH', ARGV[1], '1')
end
return n
"#,
    )
});

/// KEYS: inflight, ready. ARGV: now ms, limit, wake channel. Requeues up to
/// `limit` jobs whose lease expired (their worker died or stalled). Their
/// attempt was already counted when they were claimed.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
local len = redis.call('RPUSH', KEYS[2], unpack(ids))
if len == #ids then
  redis.call('PUBLISH', ARGV[3], '1')
end
return #ids
"#,
    )
});

/// KEYS: dead, data, attempts, errors. ARGV: cutoff ms, max kept, limit.
/// Forgets up to `limit` dead jobs that are older than the cutoff or beyond
/// the newest `max kept`. Returns how many were removed.
pub static TRIM_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local limit = tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
if #ids < limit then
  local excess = redis.call('ZCARD', KEYS[1]) - #ids - tonumber(ARGV[2])
  if excess > 0 then
    local take = math.min(excess, limit - #ids)
    local oldest = redis.call('ZRANGE', KEYS[1], #ids, #ids + take - 1)
    for _, id in ipairs(oldest) do
      ids[#ids + 1] = id
    end
  end
end
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
redis.call('HDEL', KEYS[4], unpack(ids))
return #ids
"#,
    )
});
