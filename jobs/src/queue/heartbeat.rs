//! Which worker processes are alive, and what they serve: each process
//! beats every few seconds into `{namespace}:workers` (ZSET process id →
//! last beat, Redis's clock) and `{namespace}:workers:queues` (HASH process
//! id → its queues). A process that stops beating for [`ALIVE_WITHIN`] is
//! not alive; one gone for a minute is forgotten by the next beat.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::QueueError;

/// A process whose last beat is older than this is not counted alive.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(15);
/// How often a process beats.
pub const EVERY: Duration = Duration::from_secs(5);

fn keys(namespace: &str) -> (String, String) {
    (
        format!("{namespace}:workers"),
        format!("{namespace}:workers:queues"),
    )
}

/// KEYS: workers, queues. ARGV: id, its queues, forget after ms.
static BEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return 1
"#,
    )
});

/// KEYS: workers, queues. ARGV: alive within ms. Flat (id, queues) pairs.
static ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"#,
    )
});

/// One beat of process `id` serving `queues`.
pub async fn beat(
    conn: &mut ConnectionManager,
    namespace: &str,
    id: &str,
    queues: &[&str],
) -> Result<(), QueueError> {
    let (workers, served) = keys(namespace);
    BEAT.key(workers)
        .key(served)
        .arg(id)
        .arg(queues.join(","))
        .arg(60_000)
        .invoke_async::<i64>(conn)
        .await?;
    Ok(())
}

/// A process leaving on purpose (a graceful stop).
pub async fn leave(
    conn: &mut ConnectionManager,
    namespace: &str,
    id: &str,
) -> Result<(), QueueError> {
    let (workers, served) = keys(namespace);
    redis::pipe()
        .zrem(workers, id)
        .hdel(served, id)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// A worker process that beat within [`ALIVE_WITHIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWorker {
    pub id: String,
    pub queues: Vec<String>,
}

pub async fn alive(
    conn: &mut ConnectionManager,
    namespace: &str,
) -> Result<Vec<LiveWorker>, QueueError> {
    let (workers, served) = keys(namespace);
    let flat: Vec<String> = ALIVE
        .key(workers)
        .key(served)
        .arg(u64::try_from(ALIVE_WITHIN.as_millis()).unwrap_or(u64::MAX))
        .invoke_async(conn)
        .await?;
    Ok(flat
        .chunks_exact(2)
        .filter_map(|pair| match pair {
            [id, queues] => Some(LiveWorker {
                id: id.clone(),
                queues: queues
                    .split(',')
                    .filter(|q| !q.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => None,
        })
        .collect())
}
