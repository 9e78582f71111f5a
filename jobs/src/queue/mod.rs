//! The Redis job queue: our own apalis [`Backend`](apalis::prelude::Backend)
//! ([`RedisQueue`]) over our own key layout ([`scripts`]), instead of
//! apalis-redis, whose 1.0 defaults were measured unfit: a 28 s idle pickup,
//! a fetch that fails for good past ~8,000 due jobs, orphans re-run without
//! counting attempts, retries at `now + attempt` seconds and completed jobs
//! kept in Redis forever.
//!
//! How a job moves: [`push`] → its tenant's lane (+ a pub/sub wake-up when
//! the queue was empty) → claimed by a worker's fetch, one tenant's job at
//! a time in turn (attempt counted, lease in
//! `inflight`) → settled: deleted when done, `delayed` with exponential
//! backoff and jitter when it will be retried, `dead` after its last attempt
//! (kept for [`QueueConfig::dead_retention`]). A lease that is not renewed
//! (the process died) expires and the job goes back to its lane. A run
//! stopped midway without its attempt counted (its lease lapsed, a
//! shutdown's grace ran out) marks its attempt count
//! ([`scripts::RESUMED`]) for the next run.

mod backend;
mod drain;
pub mod heartbeat;
mod lease;
pub mod scripts;
mod wake;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

pub use backend::{QueueError, QueuePersistence, RedisQueue};
pub use drain::{Drain, Unfinished};
pub use lease::LeaseWatch;
pub use wake::WakeHub;

use crate::{Envelope, Job, queue_key};

/// Tuning of one job type's queue. The defaults suit production; tests
/// shorten the timings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Most jobs claimed per fetch, to amortise the round trip.
    pub batch_size: usize,
    /// Jobs a worker runs at once. A fetch claims at most the free slots
    /// (`concurrency` minus the jobs it holds), never jobs it cannot start
    /// now: a slow job must not wait claimed behind another while an idle
    /// worker elsewhere could run it.
    pub concurrency: usize,
    /// How long a claimed job stays leased without renewal before another
    /// worker may take it over.
    pub lease: Duration,
    /// Lease renewal, expired-lease recovery and dead-job trimming period.
    pub heartbeat: Duration,
    /// Fallback fetch period of an idle worker, should a pub/sub wake-up be
    /// lost (e.g. while the subscription reconnects); also the granularity
    /// of delayed retries on an idle queue.
    pub idle_poll: Duration,
    /// First retry delay; doubled per attempt, capped by `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long dead jobs are kept for inspection.
    pub dead_retention: Duration,
    /// At most this many dead jobs are kept per job type.
    pub dead_max: usize,
    /// How often a worker trims dead jobs.
    pub trim_interval: Duration,
    /// How long finished recorded jobs are remembered (`done`), so that the
    /// sweep does not run again a job that finished but whose record could
    /// not be updated. Longer than a job's timeout plus the sweep's slack.
    pub done_retention: Duration,
    /// Delay before a restarted worker touches Redis again, so that a Redis
    /// outage does not turn restarts into a busy loop.
    pub restart_delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            concurrency: 8,
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(15 * 60),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            dead_max: 10_000,
            trim_interval: Duration::from_secs(60),
            done_retention: Duration::from_secs(6 * 3600),
            restart_delay: Duration::ZERO,
        }
    }
}

impl QueueConfig {
    /// The delay before retry number `attempt` (1-based: the attempt that
    /// just failed): `retry_base * 2^(attempt-1)`, capped, with "equal
    /// jitter" (half fixed, half random) so that jobs failing together do
    /// not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .retry_base
            .saturating_mul(1u32 << exp)
            .min(self.retry_cap);
        let half = full / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::random::<u64>() % (jitter_ms + 1)
        };
        half + Duration::from_millis(extra)
    }
}

/// The Redis keys of one job type's queue.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    pub prefix: String,
    /// The single ready list of earlier versions, drained before the lanes.
    pub ready: String,
    /// The ring of tenants with ready jobs (see [`scripts`]).
    pub lanes: String,
    /// Tenant of each queued or delayed job.
    pub lane_of: String,
    /// Prefix of the per-tenant ready lists: `{lane_prefix}{tenant}`.
    pub lane_prefix: String,
    pub delayed: String,
    pub inflight: String,
    pub data: String,
    pub attempts: String,
    pub dead: String,
    pub errors: String,
    /// Claim token of each leased job (see [`scripts`]).
    pub owners: String,
    /// Recently finished jobs that have a record (see [`scripts`]).
    pub done: String,
    /// Idempotency claims: `{tenant}:{key}` → `{job id} {claimed ms}`
    /// (see [`scripts::CLAIM_KEY`]).
    pub claims: String,
    /// The claim field of each job that holds one, so that settling the
    /// job frees its key in the same script.
    pub claim_of: String,
    /// When each queued job entered its lane (see [`scripts`]).
    pub since: String,
    /// Pub/sub channel: `ready` went from empty to non-empty.
    pub wake: String,
}

impl QueueKeys {
    /// Each job type has its own keys (`{namespace}:queue:{QUEUE}:{NAME}`)
    /// because a worker decodes one payload type.
    pub fn for_job<J: Job>(namespace: &str) -> Self {
        Self::for_kind(namespace, J::QUEUE, J::NAME)
    }

    /// [`Self::for_job`] for a job type known by name at run time.
    pub fn for_kind(namespace: &str, queue: crate::Queue, name: &str) -> Self {
        Self::new(&format!(
            "{}:{}",
            queue_key(namespace, queue.as_str()),
            name
        ))
    }

    /// The keys of a job type known by its stored names (a job record's
    /// `queue` and `type`).
    pub fn for_names(namespace: &str, queue: &str, job_type: &str) -> Self {
        Self::new(&format!("{}:{job_type}", queue_key(namespace, queue)))
    }

    /// The ready list of one tenant's jobs.
    pub fn lane(&self, tenant: &str) -> String {
        format!("{}{tenant}", self.lane_prefix)
    }

    pub fn new(prefix: &str) -> Self {
        let key = |suffix: &str| format!("{prefix}:{suffix}");
        Self {
            prefix: prefix.to_owned(),
            ready: key("ready"),
            lanes: key("lanes"),
            lane_of: key("lane_of"),
            lane_prefix: key("lane:"),
            delayed: key("delayed"),
            inflight: key("inflight"),
            data: key("data"),
            attempts: key("attempts"),
            dead: key("dead"),
            errors: key("errors"),
            owners: key("owners"),
            done: key("done"),
            claims: key("claims"),
            claim_of: key("claim_of"),
            since: key("since"),
            wake: key("wake"),
        }
    }
}

/// Pattern matching every wake-up channel of a namespace.
pub fn wake_pattern(namespace: &str) -> String {
    format!("{}:*:wake", queue_key(namespace, "*"))
}

/// A multiplexed Redis connection for queue traffic. The response timeout
/// is raised from the redis crate's 500 ms: a slow answer must not fail a
/// fetch (and restart a worker) when Redis is merely busy.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    client.get_connection_manager_with_config(config).await
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The keys and first arguments [`scripts::PUSH`] and
/// [`scripts::PUSH_FRESH`] share.
fn push_keys(invocation: &mut redis::ScriptInvocation<'_>, keys: &QueueKeys) {
    invocation
        .key(&keys.data)
        .key(&keys.attempts)
        .key(&keys.dead)
        .key(&keys.errors)
        .key(&keys.lanes)
        .key(&keys.owners)
        .key(&keys.done)
        .key(&keys.lane_of)
        .key(&keys.since)
        .arg(&keys.wake)
        .arg(&keys.lane_prefix);
}

/// Queues jobs of type `J` (id → envelope). Ids already queued, delayed or
/// running are skipped. Returns how many were queued.
pub async fn push<J: Job>(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    jobs: &[(String, Envelope<J>)],
) -> Result<usize, QueueError> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut invocation = scripts::PUSH.prepare_invoke();
    push_keys(&mut invocation, keys);
    for (id, envelope) in jobs {
        let payload = serde_json::to_vec(envelope).map_err(QueueError::Encode)?;
        invocation.arg(id).arg(&envelope.tenant_id).arg(payload);
    }
    Ok(invocation.invoke_async::<usize>(conn).await?)
}

/// Whether Redis writes an append-only file (`None` when it will not say,
/// as managed services that refuse `CONFIG` do). Without one, a restart
/// loses every queued job and every accepted webhook not yet stored.
pub async fn append_only(conn: &mut ConnectionManager) -> Option<bool> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(conn)
        .await
        .ok()?;
    reply.get(1).map(|v| v == "yes")
}

/// Queues one new job whose envelope is `head`, the JSON array of the
/// `items` not seen before, then `tail` (see [`scripts::PUSH_FRESH`]);
/// each item is `(dedup key, item JSON)`. Returns how many were fresh (0:
/// nothing was queued).
pub async fn push_fresh(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    job: (&str, &str),
    envelope: (&str, &str),
    items: &[(String, String)],
    dedup_ttl: Duration,
) -> Result<usize, QueueError> {
    let (id, tenant) = job;
    let mut invocation = scripts::PUSH_FRESH.prepare_invoke();
    push_keys(&mut invocation, keys);
    invocation
        .arg(id)
        .arg(tenant)
        .arg(envelope.0)
        .arg(envelope.1)
        .arg(dedup_ttl.as_secs().max(1));
    for (key, item) in items {
        invocation.key(key).arg(item);
    }
    Ok(invocation.invoke_async::<usize>(conn).await?)
}

/// A run that gives its worker slot back to wait (for a lock another job
/// holds) and runs again `after`, without spending an attempt. The runner
/// reports it as an error whose text is this value's display, which the
/// backend reads back when it settles the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub after: Duration,
    pub reason: String,
    /// The run began its work and was stopped (its lease lapsed), rather
    /// than choosing to wait: the next run is told that it resumes
    /// ([`Claim::resumed`]).
    pub interrupted: bool,
}

const DEFERRED: &str = "deferred for ";
const INTERRUPTED: &str = "interrupted, ";

impl std::fmt::Display for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{DEFERRED}{} ms: {}",
            if self.interrupted { INTERRUPTED } else { "" },
            self.after.as_millis(),
            self.reason
        )
    }
}

impl Deferral {
    /// The wait of an outcome that is a deferral, and whether its run was
    /// interrupted.
    pub fn parse(error: &str) -> Option<(Duration, bool)> {
        let (interrupted, rest) = match error.strip_prefix(INTERRUPTED) {
            Some(rest) => (true, rest),
            None => (false, error),
        };
        let (ms, _) = rest.strip_prefix(DEFERRED)?.split_once(" ms: ")?;
        ms.parse()
            .ok()
            .map(|ms| (Duration::from_millis(ms), interrupted))
    }
}

/// The claim under which a worker holds a job's lease, handed to the
/// handler as task data (`Data<Claim>`): the job record is finished only
/// under the claim that marked it running. The run stops when `lease`
/// lapses.
#[derive(Debug, Clone)]
pub struct Claim {
    pub token: String,
    pub lease: LeaseWatch,
    /// A run of this attempt began before and was stopped before its
    /// outcome (its lease lapsed, a shutdown's grace ran out): the attempt
    /// was given back, so the attempt number alone does not show that its
    /// work may be partly done.
    pub resumed: bool,
}

/// How a held job is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Finished: forgotten by Redis.
    Done,
    /// To run again at this time (ms since the epoch).
    Retry { due_ms: u64 },
    /// To run at this time without the attempt being counted: it waited
    /// (for a lock another job holds) instead of failing.
    Defer { due_ms: u64 },
    /// To run at this time without the attempt being counted, its run
    /// stopped after it began (its lease lapsed): the next run is told
    /// that it resumes.
    Interrupted { due_ms: u64 },
    /// Out of attempts (or not worth retrying): kept as dead with the error.
    Dead { error: String },
}

/// Appends one (id, token, kind, due ms, error) quintuple for [`scripts::SETTLE`].
pub(crate) fn settle_args(
    out: &mut Vec<String>,
    id: &str,
    token: &str,
    how: &Settlement,
    remember: bool,
) {
    let (kind, due, error) = match how {
        Settlement::Done if remember => ("D", 0, ""),
        Settlement::Done => ("d", 0, ""),
        Settlement::Retry { due_ms } => ("r", *due_ms, ""),
        Settlement::Defer { due_ms } => ("w", *due_ms, ""),
        Settlement::Interrupted { due_ms } => ("s", *due_ms, ""),
        Settlement::Dead { error } => ("x", 0, error.as_str()),
    };
    out.push(id.to_owned());
    out.push(token.to_owned());
    out.push(kind.to_owned());
    out.push(due.to_string());
    out.push(error.to_owned());
}

/// Runs [`scripts::SETTLE`] over prepared quintuples; returns how many jobs
/// were still held under their token (and so were settled).
pub(crate) async fn settle_raw(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    args: &[String],
) -> Result<usize, QueueError> {
    if args.is_empty() {
        return Ok(0);
    }
    let mut invocation = scripts::SETTLE.prepare_invoke();
    invocation
        .key(&keys.inflight)
        .key(&keys.data)
        .key(&keys.attempts)
        .key(&keys.delayed)
        .key(&keys.dead)
        .key(&keys.errors)
        .key(&keys.owners)
        .key(&keys.done)
        .key(&keys.claims)
        .key(&keys.claim_of)
        .key(&keys.lane_of)
        .arg(now_ms());
    for a in args {
        invocation.arg(a);
    }
    Ok(invocation.invoke_async::<usize>(conn).await?)
}

/// Who holds an idempotency key after [`claim_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub job_id: String,
    /// How long ago the holder claimed the key (0 when it is ours now).
    pub age: Duration,
}

/// Claims idempotency key `field` for job `ours` when it is free, ours, or
/// still held by `ended` (a holder the caller found finished); answers the
/// holder otherwise. Atomic: of concurrent claims, exactly one wins.
pub async fn claim_key(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    field: &str,
    ours: &str,
    ended: Option<&str>,
) -> Result<KeyHolder, QueueError> {
    let (job_id, age_ms): (String, i64) = scripts::CLAIM_KEY
        .key(&keys.claims)
        .key(&keys.claim_of)
        .arg(field)
        .arg(ours)
        .arg(ended.unwrap_or(""))
        .invoke_async(conn)
        .await?;
    Ok(KeyHolder {
        job_id,
        age: Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)),
    })
}

/// Gives back key `field` claimed by job `ours`, which was not recorded.
pub async fn unclaim_key(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    field: &str,
    ours: &str,
) -> Result<(), QueueError> {
    scripts::UNCLAIM_KEY
        .key(&keys.claims)
        .key(&keys.claim_of)
        .arg(field)
        .arg(ours)
        .invoke_async::<i64>(conn)
        .await?;
    Ok(())
}

/// Settles one job held under `token`. Returns `false` (and changes
/// nothing) when that claim no longer holds the job's lease.
pub async fn settle(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    id: &str,
    token: &str,
    how: &Settlement,
) -> Result<bool, QueueError> {
    let mut args = Vec::with_capacity(5);
    settle_args(&mut args, id, token, how, false);
    Ok(settle_raw(conn, keys, &args).await? == 1)
}

/// Extends the leases of `(id, token)` pairs to `deadline_ms`. Returns the
/// ids whose lease is no longer held under the given token.
pub async fn renew(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    held: &[(String, String)],
    deadline_ms: u64,
) -> Result<Vec<String>, QueueError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = scripts::RENEW.prepare_invoke();
    invocation
        .key(&keys.inflight)
        .key(&keys.owners)
        .arg(deadline_ms);
    for (id, token) in held {
        invocation.arg(id).arg(token);
    }
    Ok(invocation.invoke_async::<Vec<String>>(conn).await?)
}

/// Gives back `(id, token)` jobs to the front of the queue without
/// counting an attempt; jobs whose run `started` are run again told that
/// they resume. Returns how many were still held and released.
pub async fn release(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    held: &[(String, String)],
    started: bool,
) -> Result<u64, QueueError> {
    if held.is_empty() {
        return Ok(0);
    }
    let mut invocation = scripts::RELEASE.prepare_invoke();
    invocation
        .key(&keys.inflight)
        .key(&keys.attempts)
        .key(&keys.lanes)
        .key(&keys.owners)
        .key(&keys.lane_of)
        .key(&keys.since)
        .arg(&keys.wake)
        .arg(&keys.lane_prefix)
        .arg(if started { "1" } else { "0" });
    for (id, token) in held {
        invocation.arg(id).arg(token);
    }
    Ok(invocation.invoke_async::<u64>(conn).await?)
}

/// One fetch (see [`scripts::FETCH`]): claims up to `want` jobs under
/// `token`, first taking over those still leased under the `lost` tokens
/// (earlier fetches whose answer never arrived). Answers the raw (id,
/// attempt, payload, resumed) quadruples.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    now_ms: u64,
    deadline_ms: u64,
    want: usize,
    promote: usize,
    token: &str,
    lost: &[String],
) -> Result<Vec<redis::Value>, redis::RedisError> {
    let mut invocation = scripts::FETCH.prepare_invoke();
    invocation
        .key(&keys.ready)
        .key(&keys.delayed)
        .key(&keys.inflight)
        .key(&keys.data)
        .key(&keys.attempts)
        .key(&keys.owners)
        .key(&keys.lanes)
        .key(&keys.lane_of)
        .key(&keys.since)
        .arg(now_ms)
        .arg(deadline_ms)
        .arg(want)
        .arg(promote)
        .arg(token)
        .arg(&keys.lane_prefix);
    for t in lost {
        invocation.arg(t);
    }
    invocation.invoke_async(conn).await
}

/// Requeues up to `limit` jobs whose lease expired before `now_ms`,
/// revoking their claims. Returns how many.
pub async fn reap(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    now_ms: u64,
    limit: usize,
) -> Result<usize, QueueError> {
    Ok(scripts::REAP
        .key(&keys.inflight)
        .key(&keys.lanes)
        .key(&keys.owners)
        .key(&keys.lane_of)
        .key(&keys.since)
        .arg(now_ms)
        .arg(limit)
        .arg(&keys.wake)
        .arg(&keys.lane_prefix)
        .invoke_async(conn)
        .await?)
}

/// Where a job stands in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Queued, waiting for a retry, or running.
    Live,
    /// Out of attempts, kept for inspection.
    Dead,
    /// Finished recently (recorded jobs only).
    Done,
    /// Unknown to Redis: never pushed, or lost (Redis restarted without
    /// persistence, a failover), or finished long ago.
    Absent,
}

pub async fn presence(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    id: &str,
) -> Result<Presence, QueueError> {
    let (data, dead, done): (bool, Option<f64>, Option<f64>) = redis::pipe()
        .hexists(&keys.data, id)
        .zscore(&keys.dead, id)
        .zscore(&keys.done, id)
        .query_async(conn)
        .await?;
    Ok(match (data, dead, done) {
        (true, None, _) => Presence::Live,
        (true, Some(_), _) => Presence::Dead,
        (false, _, Some(_)) => Presence::Done,
        (false, _, None) => Presence::Absent,
    })
}

/// How many jobs of a type are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub ready: u64,
    pub delayed: u64,
    pub inflight: u64,
    pub dead: u64,
    /// How long the job that has waited longest for a worker has waited
    /// (zero when none waits): what an autoscaler or an alert watches, as
    /// a long queue that drains fast is healthy and a short one that does
    /// not move is not.
    pub oldest_wait: Duration,
}

pub async fn depth(conn: &mut ConnectionManager, keys: &QueueKeys) -> Result<Depth, QueueError> {
    let (ready, delayed, inflight, dead, waited_ms): (u64, u64, u64, u64, u64) = scripts::DEPTH
        .key(&keys.ready)
        .key(&keys.lanes)
        .key(&keys.delayed)
        .key(&keys.inflight)
        .key(&keys.dead)
        .key(&keys.since)
        .arg(&keys.lane_prefix)
        .invoke_async(conn)
        .await?;
    Ok(Depth {
        ready,
        delayed,
        inflight,
        dead,
        oldest_wait: Duration::from_millis(waited_ms),
    })
}

/// How many recorded jobs of a type finished within the last `window`.
pub async fn finished_within(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    window: Duration,
) -> Result<u64, QueueError> {
    let since = now_ms().saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
    Ok(redis::cmd("ZCOUNT")
        .arg(&keys.done)
        .arg(since)
        .arg("+inf")
        .query_async(conn)
        .await?)
}

/// The attempts counted so far for a job (0 when unknown or finished).
pub async fn attempts(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    id: &str,
) -> Result<u32, QueueError> {
    let n: Option<u32> = redis::cmd("HGET")
        .arg(&keys.attempts)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(n.unwrap_or_default() % scripts::RESUMED)
}

/// The error a dead job died with, if it is dead.
pub async fn dead_error(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    id: &str,
) -> Result<Option<String>, QueueError> {
    let (score, error): (Option<f64>, Option<String>) = redis::pipe()
        .zscore(&keys.dead, id)
        .hget(&keys.errors, id)
        .query_async(conn)
        .await?;
    Ok(score.map(|_| error.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::Deferral;
    use std::time::Duration;

    #[test]
    fn a_deferral_reads_back_its_wait_and_whether_its_run_was_interrupted() {
        for interrupted in [false, true] {
            let d = Deferral {
                after: Duration::from_millis(1500),
                reason: "waiting: for a lock 3 ms".to_owned(),
                interrupted,
            };
            assert_eq!(
                Deferral::parse(&d.to_string()),
                Some((Duration::from_millis(1500), interrupted))
            );
        }
        assert_eq!(Deferral::parse("the job timed out after 30 s"), None);
        assert_eq!(Deferral::parse("interrupted, but not deferred"), None);
    }
}
