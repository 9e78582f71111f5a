//! The Lua scripts of the queue. Each one touches a bounded number of ids
//! (a batch or a chunk), never a whole set: apalis-redis's `fetch_next.lua`
//! unpacks every due id at once and fails for good past ~8,000 of them.
//!
//! Keys of a job type, all under `{namespace}:queue:{QUEUE}:{NAME}`:
//! `lane:{tenant}` (LIST per tenant, pushed left, popped right), `lanes`
//! (LIST: the ring of tenants that have ready jobs; a fetch takes one job
//! per tenant in turn, so one tenant's flood delays another tenant's job
//! by at most one job per tenant with work), `lane_of` (HASH id → tenant),
//! `ready` (LIST, the single list of earlier versions, still drained first),
//! `delayed` (ZSET id → due ms),
//! `inflight` (ZSET id → lease deadline ms), `data` (HASH id → envelope JSON),
//! `attempts` (HASH id → attempts counted, plus [`RESUMED`] while the
//! current attempt resumes, see below), `dead` (ZSET id → died ms),
//! `errors` (HASH id → last error of a dead job), `owners` (HASH id → token
//! of the claim that holds the lease), `done` (ZSET id → finished ms, for
//! jobs with a MongoDB record only, kept for a while so that the sweep can
//! tell a finished job whose record update failed from a lost one),
//! `claims` (HASH `{tenant}:{idempotency key}` → `{job id} {claimed ms}`)
//! and `claim_of` (HASH job id → its claim field), `since` (HASH id → ms
//! it entered its lane, by Redis's clock: how long the head of each lane has
//! waited, the age of the oldest job that an autoscaler or an alert
//! watches). `wake` is the pub/sub channel announcing that `ready` stopped
//! being empty.
//!
//! A run of a job's current attempt that began and was stopped before its
//! outcome (its lease lapsed, a shutdown's grace ran out) gives the attempt
//! back, so only a mark tells the next run that what the stopped one did
//! may already be done: [`RESUMED`] added to the job's `attempts` field
//! until the attempt ends. The same field, not a hash of its own, so that a
//! fetch and a settle pay no extra command for it (a hash of its own took
//! two more per job, about 7% over the 27 Redis commands a no-op job
//! costs).
//!
//! Leases are owned: every claim gets a token, and renewing, settling or
//! releasing a job only acts when the caller presents the token of the
//! current claim. A run that stalled past its lease (and was requeued and
//! claimed again elsewhere) can no longer renew, settle, reschedule or
//! release the new owner's lease.

use std::sync::LazyLock;

use redis::Script;

/// Lua shared by the scripts that put ids back in line. `lane_of`,
/// `lanes` and the lane prefix are the first three arguments of `requeue`,
/// `since` the fourth. `front` puts the id at the consuming end of its lane
/// and a new lane at the consuming end of the ring (it runs next);
/// otherwise at the back. Returns 1 when the tenant's lane was empty (it
/// joined the ring).
const REQUEUE: &str = r#"
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function requeue(lane_of, lanes, prefix, since, id, front)
  local tenant = redis.call('HGET', lane_of, id) or ''
  redis.call('HSET', since, id, now_ms)
  local len
  if front then
    len = redis.call('RPUSH', prefix .. tenant, id)
  else
    len = redis.call('LPUSH', prefix .. tenant, id)
  end
  if len == 1 then
    if front then
      redis.call('RPUSH', lanes, tenant)
    else
      redis.call('LPUSH', lanes, tenant)
    end
    return 1
  end
  return 0
end
"#;

fn with_requeue(body: &str) -> Script {
    Script::new(&format!("{REQUEUE}\n{body}"))
}

/// Added to a job's `attempts` field while its current attempt resumes a
/// run stopped midway (see the module's account); far above any attempt
/// count.
pub const RESUMED: u32 = 1_000_000;

/// Lua defining `RESUMED`; `counted(v)`, which splits an `attempts` value
/// into the attempt and 1 when it resumes (else 0); and `give_back(attempts,
/// id, started)`, which uncounts the attempt of a run that goes back without
/// an outcome and marks it resumed when that run `started`.
fn resumed_lua() -> String {
    format!(
        r#"
local RESUMED = {RESUMED}
local function counted(v)
  if v >= RESUMED then
    return v - RESUMED, 1
  end
  return v, 0
end
local function give_back(attempts, id, started)
  local left = redis.call('HINCRBY', attempts, id, -1)
  if started and left < RESUMED then
    redis.call('HINCRBY', attempts, id, RESUMED)
  end
end
"#
    )
}

/// KEYS: data, attempts, dead, errors, lanes, owners, done, lane_of,
/// since. ARGV: wake channel, lane prefix, then (id, tenant, payload)
/// triples. An id
/// that is already queued, delayed or running is left alone (pushing it
/// again would run it twice); a dead one is revived with a fresh attempt
/// count. Returns how many ids were queued.
pub static PUSH: LazyLock<Script> = LazyLock::new(|| {
    with_requeue(
        r#"
local queued = 0
local joined = 0
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local live = redis.call('HEXISTS', KEYS[1], id) == 1
    and redis.call('ZSCORE', KEYS[3], id) == false
  if not live then
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[7], id)
    redis.call('HSET', KEYS[8], id, ARGV[i + 1])
    joined = joined + requeue(KEYS[8], KEYS[5], ARGV[2], KEYS[9], id, false)
    queued = queued + 1
  end
end
-- Only an empty queue can have idle workers waiting on it: busy workers
-- fetch again by themselves until they see it empty.
if joined > 0 and redis.call('LLEN', KEYS[5]) == joined then
  redis.call('PUBLISH', ARGV[1], '1')
end
return queued
"#,
    )
});

/// KEYS: those of [`PUSH`], then one dedup key per item. ARGV: wake
/// channel, lane prefix, job id, tenant, envelope head, envelope tail, dedup
/// TTL in seconds, then one JSON item per dedup key. Each dedup key is set
/// (to the job id) only if absent; the job is queued with the items whose
/// key was set, `head .. '[' .. items .. ']' .. tail`, or not at all when
/// every item was seen before. Deduplication and queueing are one atomic
/// step (one round trip, one AOF entry): a delivery is never marked seen
/// without being queued. Returns how many items were fresh.
pub static PUSH_FRESH: LazyLock<Script> = LazyLock::new(|| {
    with_requeue(
        r#"
local fresh = {}
for i = 10, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[3], 'NX', 'EX', ARGV[7]) then
    fresh[#fresh + 1] = ARGV[i - 2]
  end
end
if #fresh == 0 then
  return 0
end
local id = ARGV[3]
redis.call('HSET', KEYS[1], id, ARGV[5] .. '[' .. table.concat(fresh, ',') .. ']' .. ARGV[6])
redis.call('HSET', KEYS[8], id, ARGV[4])
local joined = requeue(KEYS[8], KEYS[5], ARGV[2], KEYS[9], id, false)
if joined > 0 and redis.call('LLEN', KEYS[5]) == joined then
  redis.call('PUBLISH', ARGV[1], '1')
end
return #fresh
"#,
    )
});

/// KEYS: ready (earlier versions' list), delayed, inflight, data, attempts,
/// owners, lanes, lane_of, since. ARGV: now ms, lease deadline ms, batch size,
/// promote limit, claim token, lane prefix. Moves at most `promote limit`
/// due delayed ids to the consuming end of their lanes, then claims up to
/// `batch` ids, one per tenant in turn: counts the attempt (here, because a
/// crashed worker never reports back), leases them and records the claim
/// token (unique per fetch, so per claim of an id). Returns flat (id,
/// attempt, payload, resumed) quadruples, `resumed` 1 when a run of this
/// attempt began before and was stopped, else 0.
///
/// ARGV from the 7th: tokens of earlier fetches of this worker whose answer
/// was lost (the connection broke after Redis ran them). Jobs still leased
/// under those tokens are taken over by this fetch first, attempt
/// unchanged, instead of staying leased to nobody until the lease runs out.
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    with_requeue(&format!(
        "{}{}",
        resumed_lua(),
        r#"
local want = tonumber(ARGV[3])
local claimed = 0
local out = {}
if #ARGV > 6 then
  local lost = {}
  for i = 7, #ARGV do lost[ARGV[i]] = true end
  local owners = redis.call('HGETALL', KEYS[6])
  for i = 1, #owners, 2 do
    local id = owners[i]
    if lost[owners[i + 1]] then
      local payload = redis.call('HGET', KEYS[4], id)
      if payload then
        redis.call('HSET', KEYS[6], id, ARGV[5])
        redis.call('ZADD', KEYS[3], ARGV[2], id)
        local attempt, resumed = counted(tonumber(redis.call('HGET', KEYS[5], id) or '1'))
        out[#out + 1] = id
        out[#out + 1] = attempt
        out[#out + 1] = payload
        out[#out + 1] = resumed
        claimed = claimed + 1
      end
    end
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  for _, id in ipairs(due) do
    requeue(KEYS[8], KEYS[7], ARGV[6], KEYS[9], id, true)
  end
end
local function claim(id)
  redis.call('HDEL', KEYS[9], id)
  local payload = redis.call('HGET', KEYS[4], id)
  -- No payload: the job finished elsewhere (e.g. it was reclaimed after a
  -- stall and its first run completed); drop the stale id.
  if payload then
    local attempt, resumed = counted(redis.call('HINCRBY', KEYS[5], id, 1))
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    redis.call('HSET', KEYS[6], id, ARGV[5])
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = payload
    out[#out + 1] = resumed
    claimed = claimed + 1
  end
end
if redis.call('LLEN', KEYS[1]) > 0 then
  local legacy = redis.call('RPOP', KEYS[1], want)
  if legacy then
    for _, id in ipairs(legacy) do claim(id) end
  end
end
-- Each turn takes one id from the tenant at the consuming end of the ring
-- and moves that tenant to the back; an emptied lane leaves the ring.
while claimed < want do
  local tenant = redis.call('RPOPLPUSH', KEYS[7], KEYS[7])
  if not tenant then break end
  local lane = ARGV[6] .. tenant
  local id = redis.call('RPOP', lane)
  if redis.call('LLEN', lane) == 0 then
    redis.call('LREM', KEYS[7], 1, tenant)
  end
  if id then claim(id) end
end
return out
"#,
    ))
});

/// KEYS: ready (earlier versions' list), lanes, delayed, inflight, dead,
/// since. ARGV: lane prefix. Jobs per state in one round trip: `{ready,
/// delayed, inflight, dead, waited}`, ready summed over every tenant's
/// lane; `waited` is how long (ms, by Redis's clock) the job that has waited
/// longest for a worker has waited: the heads of the lanes, and delayed
/// jobs already due (they wait in `delayed` until a fetch promotes them),
/// counted from their due time. 0 when nothing waits.
pub static DEPTH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local oldest = now
local function waiting(id)
  if id then
    local since = tonumber(redis.call('HGET', KEYS[6], id))
    if since and since < oldest then oldest = since end
  end
end
local ready = redis.call('LLEN', KEYS[1])
waiting(redis.call('LINDEX', KEYS[1], -1))
for _, tenant in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local lane = ARGV[1] .. tenant
  ready = ready + redis.call('LLEN', lane)
  waiting(redis.call('LINDEX', lane, -1))
end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #due == 2 and tonumber(due[2]) < oldest then oldest = tonumber(due[2]) end
return {ready, redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), now - oldest}
"#,
    )
});

/// KEYS: inflight, data, attempts, delayed, dead, errors, owners, done,
/// claims, claim_of, lane_of.
/// ARGV: now ms, then (id, token, kind, due ms, error) quintuples; kind `d`
/// done, `D` done and remembered in `done`, `r` retry at due, `w` run
/// again at due without counting the attempt, `s` the same for a run
/// stopped after it began (the next run is told it resumes), `x` dead.
/// An attempt that ends (done, retried or dead) forgets that it resumed.
/// A job that ends (done or dead) frees its idempotency key, if it holds
/// one. Only a job still leased under `token` is settled:
/// a stale run (its lease expired, the job was requeued and maybe claimed
/// again) changes nothing. Done jobs are deleted outright so Redis does not
/// grow with completed work; dead ones are kept (and trimmed by
/// `TRIM_DEAD`). Returns how many were settled.
pub static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        resumed_lua(),
        r#"
local settled = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  local kind = ARGV[i + 2]
  if redis.call('HGET', KEYS[7], id) == ARGV[i + 1]
    and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[7], id)
    settled = settled + 1
    local again = kind == 'w' or kind == 's'
    if kind ~= 'r' and not again then
      redis.call('HDEL', KEYS[11], id)
      local field = redis.call('HGET', KEYS[10], id)
      if field then
        redis.call('HDEL', KEYS[10], id)
        local holder = redis.call('HGET', KEYS[9], field)
        if holder and string.sub(holder, 1, #id + 1) == id .. ' ' then
          redis.call('HDEL', KEYS[9], field)
        end
      end
    end
    if kind == 'd' or kind == 'D' then
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
      if kind == 'D' then
        redis.call('ZADD', KEYS[8], ARGV[1], id)
      end
    elseif kind == 'r' or again then
      redis.call('ZADD', KEYS[4], ARGV[i + 3], id)
      if again then
        give_back(KEYS[3], id, kind == 's')
      elseif tonumber(redis.call('HGET', KEYS[3], id) or '0') >= RESUMED then
        redis.call('HINCRBY', KEYS[3], id, -RESUMED)
      end
    else
      redis.call('ZADD', KEYS[5], ARGV[1], id)
      redis.call('HSET', KEYS[6], id, ARGV[i + 4])
    end
  end
end
return settled
"#,
    ))
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

/// KEYS: inflight, attempts, lanes, owners, lane_of, since.
/// ARGV: wake channel, lane prefix, started (`1` or `0`), then (id, token)
/// pairs. Gives back jobs this claim holds (claimed but never started, or
/// started and still running when a graceful shutdown's grace ran out:
/// `started` 1, their next run is told it resumes) without counting an
/// attempt, at the consuming end so they run next. A job whose lease is no
/// longer held under `token` is left alone.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    with_requeue(&format!(
        "{}{}",
        resumed_lua(),
        r#"
local n = 0
local joined = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[i + 1]
    and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[4], id)
    give_back(KEYS[2], id, ARGV[3] == '1')
    joined = joined + requeue(KEYS[5], KEYS[3], ARGV[2], KEYS[6], id, true)
    n = n + 1
  end
end
if joined > 0 and redis.call('LLEN', KEYS[3]) == joined then
  redis.call('PUBLISH', ARGV[1], '1')
end
return n
"#,
    ))
});

/// KEYS: inflight, lanes, owners, lane_of, since. ARGV: now ms, limit, wake
/// channel, lane prefix. Requeues up to `limit` jobs whose lease expired
/// (their worker died or stalled) and revokes their claim. Their attempt
/// was already counted when they were claimed.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    with_requeue(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
local joined = 0
for _, id in ipairs(ids) do
  joined = joined + requeue(KEYS[4], KEYS[2], ARGV[4], KEYS[5], id, true)
end
if joined > 0 and redis.call('LLEN', KEYS[2]) == joined then
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

/// KEYS: claims, claim_of. ARGV: field (`{tenant}:{key}`), our job id, the
/// holder we saw ended (or empty). Takes the idempotency key for our job
/// when it is free, already ours, or still held by the ended holder we
/// name; otherwise leaves it alone. Returns `{holder, age ms}`: ourselves
/// with age 0 when taken, else the current holder and how long ago it
/// claimed (Redis TIME, so every process agrees on the age). Deciding in
/// one script is what makes concurrent enqueues with one key agree.
pub static CLAIM_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local space = string.find(current, ' ', 1, true)
  local holder = string.sub(current, 1, space - 1)
  if holder ~= ARGV[2] and holder ~= ARGV[3] then
    return {holder, now - tonumber(string.sub(current, space + 1))}
  end
  if holder ~= ARGV[2] then
    redis.call('HDEL', KEYS[2], holder)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return {ARGV[2], 0}
"#,
    )
});

/// KEYS: claims, claim_of. ARGV: field, job id. Gives back a key the job
/// claimed but could not record.
pub static UNCLAIM_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and string.sub(current, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"#,
    )
});
