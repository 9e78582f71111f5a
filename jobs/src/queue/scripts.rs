//! The Lua scripts of the queue. Each one touches a bounded number of ids
//! (a batch or a chunk), never a whole set: apalis-redis's `fetch_next.lua`
//! unpacks every due id at once and fails for good past ~8,000 of them.
//!
//! Keys of a job type, all under `{namespace}:queue:{QUEUE}:{NAME}`:
//! `ready` (LIST, pushed left, popped right), `delayed` (ZSET id → due ms),
//! `inflight` (ZSET id → lease deadline ms), `data` (HASH id → envelope JSON),
//! `attempts` (HASH id → runs started), `dead` (ZSET id → died ms),
//! `errors` (HASH id → last error of a dead job), `owners` (HASH id → token
//! of the claim that holds the lease), `done` (ZSET id → finished ms, for
//! jobs with a MongoDB record only, kept for a while so that the sweep can
//! tell a finished job whose record update failed from a lost one). `wake`
//! is the pub/sub channel
//! announcing that `ready` stopped being empty.
//!
//! Leases are owned: every claim gets a token, and renewing, settling or
//! releasing a job only acts when the caller presents the token of the
//! current claim. A run that stalled past its lease (and was requeued and
//! claimed again elsewhere) can no longer renew, settle, reschedule or
//! release the new owner's lease.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: data, attempts, dead, errors, ready, owners, done. ARGV: wake channel, then
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
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[7], id)
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

/// KEYS: ready, delayed, inflight, data, attempts, owners. ARGV: now ms,
/// lease deadline ms, batch size, promote limit, claim token. Moves at most
/// `promote limit` due delayed ids to the consuming end of `ready`, then
/// claims up to `batch` ids: counts the attempt (here, because a crashed
/// worker never reports back), leases them and records the claim token
/// (unique per fetch, so per claim of an id). Returns flat (id, attempt,
/// payload) triples.
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
    redis.call('HSET', KEYS[6], id, ARGV[5])
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = payload
  end
end
return out
"#,
    )
});

/// KEYS: inflight, data, attempts, delayed, dead, errors, owners, done.
/// ARGV: now ms, then (id, token, kind, due ms, error) quintuples; kind `d`
/// done, `D` done and remembered in `done`, `r` retry at due, `x` dead. Only a job still leased under `token` is settled:
/// a stale run (its lease expired, the job was requeued and maybe claimed
/// again) changes nothing. Done jobs are deleted outright so Redis does not
/// grow with completed work; dead ones are kept (and trimmed by
/// `TRIM_DEAD`). Returns how many were settled.
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local settled = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  local kind = ARGV[i + 2]
  if redis.call('HGET', KEYS[7], id) == ARGV[i + 1]
    and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[7], id)
    settled = settled + 1
    if kind == 'd' or kind == 'D' then
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
      if kind == 'D' then
        redis.call('ZADD', KEYS[8], ARGV[1], id)
      end
    elseif kind == 'r' then
      redis.call('ZADD', KEYS[4], ARGV[i + 3], id)
    else
      redis.call('ZADD', KEYS[5], ARGV[1], id)
      redis.call('HSET', KEYS[6], id, ARGV[i + 4])
    end
  end
end
return settled
"#,
    )
});

/// KEYS: inflight, owners. ARGV: lease deadline ms, then (id, token) pairs.
/// Extends the leases still held under their token. Returns the ids whose
/// lease is lost (reaped, or claimed again by another run).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[2], id) == ARGV[i + 1]
    and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
  else
    lost[#lost + 1] = id
  end
end
return lost
"#,
    )
});

/// KEYS: inflight, attempts, ready, owners. ARGV: wake channel, then (id,
/// token) pairs. Gives back jobs this claim holds (claimed but never
/// started, or still running when a graceful shutdown's grace ran out)
/// without counting an attempt, at the consuming end so they run next. A
/// job whose lease is no longer held under `token` is left alone.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local len = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[i + 1]
    and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[4], id)
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

/// KEYS: inflight, ready, owners. ARGV: now ms, limit, wake channel.
/// Requeues up to `limit` jobs whose lease expired (their worker died or
/// stalled) and revokes their claim. Their attempt was already counted when
/// they were claimed.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
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
