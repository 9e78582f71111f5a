//! Fixed-window counters in Redis, shared by every api replica.

use crate::kv::Kv;

const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
";

const PEEK: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('TTL', KEYS[1])
return {n, ttl}
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after_secs: u64 },
}

fn decide(count: i64, ttl: i64, limit: u32) -> Decision {
    if count > i64::from(limit) {
        Decision::Limited {
            retry_after_secs: u64::try_from(ttl.max(1)).unwrap_or(1),
        }
    } else {
        Decision::Allowed
    }
}

/// Counts one event against `bucket` and tells whether it is over `limit`.
pub async fn hit(
    kv: &Kv,
    bucket: &str,
    limit: u32,
    window_secs: u64,
) -> redis::RedisResult<Decision> {
    let mut conn = kv.conn();
    let (count, ttl): (i64, i64) = redis::Script::new(HIT)
        .key(kv.key(&["ratelimit", bucket]))
        .arg(window_secs)
        .invoke_async(&mut conn)
        .await?;
    Ok(decide(count, ttl, limit))
}

/// Tells whether `bucket` is already at `limit`, without counting.
pub async fn check(kv: &Kv, bucket: &str, limit: u32) -> redis::RedisResult<Decision> {
    let mut conn = kv.conn();
    let (count, ttl): (i64, i64) = redis::Script::new(PEEK)
        .key(kv.key(&["ratelimit", bucket]))
        .invoke_async(&mut conn)
        .await?;
    // At the limit already: the next attempt would exceed it.
    Ok(decide(count + 1, ttl, limit))
}

pub async fn reset(kv: &Kv, bucket: &str) -> redis::RedisResult<()> {
    let mut conn = kv.conn();
    redis::cmd("DEL")
        .arg(kv.key(&["ratelimit", bucket]))
        .query_async::<()>(&mut conn)
        .await
}

const GIVE_BACK: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// Takes back one counted event (an attempt that turned out legitimate).
pub async fn give_back(kv: &Kv, bucket: &str) -> redis::RedisResult<()> {
    let mut conn = kv.conn();
    redis::Script::new(GIVE_BACK)
        .key(kv.key(&["ratelimit", bucket]))
        .invoke_async::<i64>(&mut conn)
        .await
        .map(|_| ())
}
