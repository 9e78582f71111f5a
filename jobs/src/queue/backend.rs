//! [`RedisQueue`]: an apalis backend over the keys of [`super::scripts`].
//!
//! apalis-core's [`Persisted`] drives the worker side (register, heartbeat,
//! fetch, buffered tasks, batched result events); [`QueuePersistence`] says
//! what each step does in Redis. `RedisQueue` adds the idle wait: after an
//! empty fetch it sleeps until a pub/sub wake-up or the fallback poll.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::prelude::{Backend, Codec, Status, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::persistence::{
    Persisted, Persistence, State, TaskEvent, TaskPersistLayer,
};
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use super::lease::{LeaseWatch, valid_until};
use super::{Claim, Deferral, Drain, QueueConfig, QueueKeys, Settlement, WakeHub, now_ms, scripts};
use crate::{Envelope, Job};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the job could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("unexpected reply from redis: {0}")]
    Reply(&'static str),
}

/// How many ids one renewal, recovery or trim command touches: keeps every
/// script call short whatever the size of the sets.
const CHUNK: usize = 500;
/// Chunks per heartbeat and per kind of maintenance: bounds the time one
/// heartbeat may take; the rest waits for the next one.
const MAX_CHUNKS: usize = 20;
/// Tries of a renewal, settle or release before it is left for later: a
/// Redis error never stops the worker (that would drop every job it runs).
pub(crate) const TRIES: u32 = 3;
/// First pause between tries; doubled after each.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause of a worker's fetches while Redis does not answer.
const MAX_FETCH_PAUSE: Duration = Duration::from_secs(1);
/// Failed fetches remembered for a take-over: past a lease's worth of
/// failures their jobs are reaped anyway.
const MAX_LOST_FETCHES: usize = 64;

/// A lease this worker holds.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Token of the claim: renewals and outcomes go under it.
    pub(crate) token: String,
    /// Tenant of the job, to find its record.
    pub(crate) tenant: String,
    /// What the run under this claim knows of the lease.
    pub(crate) watch: LeaseWatch,
}

#[derive(Default)]
pub(crate) struct Shared {
    /// Ids this worker claimed and has not settled, with their lease. An id
    /// stays here until its outcome is written to Redis, so that its lease
    /// is kept while the outcome waits for Redis.
    held: Mutex<HashMap<String, Lease>>,
    /// Outcomes (SETTLE quintuples) Redis did not take yet: written, in
    /// order, before any later outcome and at every heartbeat.
    pending: Mutex<Vec<String>>,
    /// Claimed jobs a draining worker will not start: (id, token) pairs the
    /// drain gives back.
    to_release: Mutex<Vec<(String, String)>>,
    /// Fetches that failed in a row: idle waits grow with it.
    fetch_failures: AtomicU32,
    /// Tokens of those failed fetches: Redis may have run them and lost
    /// only the answer, so the next fetch takes over their claims.
    lost_fetches: Mutex<Vec<String>>,
    last_trim: Mutex<Option<Instant>>,
}

pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update; the data is
    // still the best knowledge there is.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        locked(&self.held)
    }

    pub(crate) fn take_to_release(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *locked(&self.to_release))
    }

    pub(crate) fn to_release_ids(&self) -> std::collections::HashSet<String> {
        locked(&self.to_release)
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Claimed tasks that will not start: out of `held` (their outcome
    /// would be ignored) and into `to_release`.
    fn give_back<J>(&self, tasks: impl IntoIterator<Item = Task<Envelope<J>>>) {
        let mut held = self.held();
        let mut to_release = locked(&self.to_release);
        for task in tasks {
            if let Some(id) = task.task_id().map(ToString::to_string)
                && let Some(lease) = held.remove(&id)
            {
                to_release.push((id, lease.token));
            }
        }
    }

    /// Ids whose outcome waits for Redis: finished, not to be released.
    pub(crate) fn pending_ids(&self) -> std::collections::HashSet<String> {
        locked(&self.pending)
            .chunks(5)
            .filter_map(|q| q.first().cloned())
            .collect()
    }

    /// Writes outcomes to Redis: those left over from an outage first, then
    /// `args`, in up to `tries` tries. When Redis does not answer they are
    /// kept for the next heartbeat (their leases are renewed meanwhile):
    /// a finished job is never dropped nor its worker stopped.
    pub(crate) async fn settle(
        &self,
        conn: &mut ConnectionManager,
        keys: &QueueKeys,
        args: Vec<String>,
        tries: u32,
    ) {
        let mut all = std::mem::take(&mut *locked(&self.pending));
        all.extend(args);
        if all.is_empty() {
            return;
        }
        let expected = all.len() / 5;
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=tries.max(1) {
            match super::settle_raw(conn, keys, &all).await {
                Ok(settled) => {
                    let mut held = self.held();
                    for q in all.chunks(5) {
                        if let [id, token, ..] = q
                            && held.get(id).is_some_and(|l| l.token == *token)
                        {
                            held.remove(id);
                        }
                    }
                    drop(held);
                    if settled < expected {
                        tracing::warn!(queue = %keys.prefix, stale = expected - settled, "outcomes of runs that no longer held their lease were ignored");
                    }
                    return;
                }
                Err(e) if attempt < tries => {
                    tracing::warn!(queue = %keys.prefix, error = %e, attempt, "job outcomes not written yet, retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(queue = %keys.prefix, error = %e, jobs = expected, "job outcomes kept until redis answers");
                    let mut pending = locked(&self.pending);
                    // Outcomes that arrived meanwhile go after these.
                    let later = std::mem::take(&mut *pending);
                    *pending = all;
                    pending.extend(later);
                    return;
                }
            }
        }
    }
}

/// What the worker's steps do in Redis, for job type `J`.
pub struct QueuePersistence<J> {
    conn: ConnectionManager,
    keys: Arc<QueueKeys>,
    config: Arc<QueueConfig>,
    shared: Arc<Shared>,
    /// The process's drain, if it drains on shutdown.
    drain: Option<Drain>,
    _job: PhantomData<fn() -> J>,
}

impl<J> Clone for QueuePersistence<J> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            drain: self.drain.clone(),
            _job: PhantomData,
        }
    }
}

impl<J> std::fmt::Debug for QueuePersistence<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePersistence")
            .field("queue", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl<J: Job> QueuePersistence<J> {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.shared.held()
    }

    /// Free slots: jobs that could start as soon as they are fetched.
    fn claimable(&self) -> usize {
        let held = self.held().len();
        self.config
            .concurrency
            .saturating_sub(held)
            .clamp(1, self.config.batch_size.max(1))
    }

    fn deadline(&self) -> u64 {
        now_ms().saturating_add(u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX))
    }

    /// Requeues jobs whose lease expired (their worker died), in chunks.
    async fn reap(&mut self) -> Result<usize, QueueError> {
        let mut total = 0;
        for _ in 0..MAX_CHUNKS {
            let n = super::reap(&mut self.conn, &self.keys, now_ms(), CHUNK).await?;
            total += n;
            if n < CHUNK {
                break;
            }
        }
        if total > 0 {
            tracing::warn!(queue = %self.keys.prefix, jobs = total, "requeued jobs whose worker stopped renewing their lease");
        }
        Ok(total)
    }

    /// Extends the leases this worker still holds under its claims. A lease
    /// found lost (it expired and the job was requeued, maybe claimed again
    /// elsewhere) is logged: the run here can no longer settle the job.
    async fn renew(&mut self) -> Result<(), QueueError> {
        let held: Vec<(String, String, LeaseWatch)> = self
            .held()
            .iter()
            .map(|(id, lease)| (id.clone(), lease.token.clone(), lease.watch.clone()))
            .collect();
        for chunk in held.chunks(CHUNK) {
            let sent = tokio::time::Instant::now();
            let deadline = self.deadline();
            let pairs: Vec<(String, String)> = chunk
                .iter()
                .map(|(id, token, _)| (id.clone(), token.clone()))
                .collect();
            let lost = super::renew(&mut self.conn, &self.keys, &pairs, deadline).await?;
            let until = valid_until(sent, self.config.lease);
            for (id, _, watch) in chunk {
                if lost.contains(id) {
                    tracing::warn!(queue = %self.keys.prefix, job_id = %id, "lease lost: the job was requeued after a stall, this run stops");
                    watch.lose();
                } else {
                    watch.extend(until);
                }
            }
        }
        Ok(())
    }

    async fn trim_dead(&mut self) -> Result<(), QueueError> {
        {
            let mut last = self
                .shared
                .last_trim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < self.config.trim_interval) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let retention = u64::try_from(self.config.dead_retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(retention);
        for _ in 0..MAX_CHUNKS {
            let n: usize = scripts::TRIM_DEAD
                .key(&self.keys.dead)
                .key(&self.keys.data)
                .key(&self.keys.attempts)
                .key(&self.keys.errors)
                .arg(cutoff)
                .arg(self.config.dead_max)
                .arg(CHUNK)
                .invoke_async(&mut self.conn)
                .await?;
            if n < CHUNK {
                break;
            }
        }
        let done_retention =
            u64::try_from(self.config.done_retention.as_millis()).unwrap_or(u64::MAX);
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(&self.keys.done)
            .arg("-inf")
            .arg(now_ms().saturating_sub(done_retention))
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn settle(&mut self, args: Vec<String>, tries: u32) {
        self.shared
            .settle(&mut self.conn, &self.keys, args, tries)
            .await;
    }

    /// [`Self::renew`] with retries: a lease must not lapse over one lost
    /// reply.
    async fn renew_retrying(&mut self) {
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=TRIES {
            match self.renew().await {
                Ok(()) => return,
                Err(e) if attempt < TRIES => {
                    tracing::warn!(queue = %self.keys.prefix, error = %e, attempt, "lease renewal failed, retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(queue = %self.keys.prefix, error = %e, "leases not renewed, next try at the next heartbeat");
                }
            }
        }
    }

    fn draining(&self) -> bool {
        self.drain.as_ref().is_some_and(Drain::is_draining)
    }

    /// How long an idle worker waits before fetching again: the idle poll,
    /// growing while fetches fail (Redis unreachable).
    fn fetch_pause(&self) -> Duration {
        let failures = self.shared.fetch_failures.load(Ordering::Relaxed);
        if failures == 0 {
            return self.config.idle_poll;
        }
        let grown = self
            .config
            .idle_poll
            .max(FIRST_PAUSE)
            .saturating_mul(1 << failures.min(6));
        grown.min(MAX_FETCH_PAUSE.max(self.config.idle_poll))
    }
}

impl<J: Job> Persistence for QueuePersistence<J> {
    type Compact = Envelope<J>;
    type Response = ();
    type Error = QueueError;

    async fn register(&mut self, _worker: &WorkerContext) -> Result<(), QueueError> {
        if !self.config.restart_delay.is_zero() {
            tokio::time::sleep(self.config.restart_delay).await;
        }
        if let Err(e) = self.reap().await {
            tracing::warn!(queue = %self.keys.prefix, error = %e, "expired leases not recovered at start, next try at the next heartbeat");
        }
        Ok(())
    }

    /// Never fails: a Redis error here must not stop the worker and drop
    /// the jobs it runs. What could not be done is retried at the next
    /// heartbeat.
    async fn heartbeat(&mut self, _worker: &WorkerContext) -> Result<(), QueueError> {
        self.settle(Vec::new(), 1).await;
        self.renew_retrying().await;
        if let Err(e) = self.reap().await {
            tracing::warn!(queue = %self.keys.prefix, error = %e, "expired leases not recovered, next try at the next heartbeat");
        }
        if let Err(e) = self.trim_dead().await {
            tracing::warn!(queue = %self.keys.prefix, error = %e, "dead jobs not trimmed, next try later");
        }
        Ok(())
    }

    async fn fetch_next(
        &mut self,
        _worker: &WorkerContext,
    ) -> Result<Vec<Task<Envelope<J>>>, QueueError> {
        if self.draining() {
            return Ok(Vec::new());
        }
        // Unique per fetch, and a fetch claims an id at most once: unique
        // per claim.
        let token = ulid::Ulid::generate().to_string();
        let lost = locked(&self.shared.lost_fetches).clone();
        let (deadline, want) = (self.deadline(), self.claimable());
        let sent = tokio::time::Instant::now();
        let reply = super::fetch(
            &mut self.conn,
            &self.keys,
            now_ms(),
            deadline,
            want,
            self.config.batch_size.saturating_mul(5),
            &token,
            &lost,
        )
        .await;
        // Only fetching pauses while Redis does not answer: the idle wait
        // grows (see `fetch_pause`), running jobs go on.
        let reply = match reply {
            Ok(reply) => {
                // What those fetches claimed is in this answer.
                if !lost.is_empty() {
                    locked(&self.shared.lost_fetches).retain(|t| !lost.contains(t));
                }
                let failed = self.shared.fetch_failures.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    tracing::info!(queue = %self.keys.prefix, failed, "fetching again after redis errors");
                }
                reply
            }
            Err(e) => {
                // Redis may have run it and lost only the answer: its claims
                // are taken over by the next fetch that gets through.
                {
                    let mut lost = locked(&self.shared.lost_fetches);
                    if lost.len() == MAX_LOST_FETCHES {
                        lost.remove(0);
                    }
                    lost.push(token.clone());
                }
                let failed = self.shared.fetch_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failed == 1 {
                    tracing::warn!(queue = %self.keys.prefix, error = %e, "fetch failed, pausing fetches until redis answers");
                } else {
                    tracing::debug!(queue = %self.keys.prefix, error = %e, failed, "fetch failed again");
                }
                return Ok(Vec::new());
            }
        };
        let mut tasks = Vec::with_capacity(reply.len() / 4);
        let mut undecodable = Vec::new();
        let mut drained = Vec::new();
        let mut iter = reply.into_iter();
        while let (Some(id), Some(attempt), Some(payload), Some(resumed)) =
            (iter.next(), iter.next(), iter.next(), iter.next())
        {
            let (
                redis::Value::BulkString(id),
                redis::Value::Int(attempt),
                redis::Value::BulkString(payload),
                redis::Value::Int(resumed),
            ) = (id, attempt, payload, resumed)
            else {
                return Err(QueueError::Reply("fetch returned a malformed job"));
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let envelope: Envelope<J> = match serde_json::from_slice(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(job_id = %id, queue = %self.keys.prefix, error = %e, "job payload could not be decoded, moved to dead");
                    super::settle_args(
                        &mut undecodable,
                        &id,
                        &token,
                        &Settlement::Dead {
                            error: format!("the payload could not be decoded: {e}"),
                        },
                        false,
                    );
                    continue;
                }
            };
            if self.draining() {
                // Claimed by a fetch that raced the start of a drain: give
                // it back at once.
                drained.push((id, token.clone()));
                continue;
            }
            let watch = LeaseWatch::new(valid_until(sent, self.config.lease));
            let lease = Lease {
                token: token.clone(),
                tenant: envelope.tenant_id.clone(),
                watch: watch.clone(),
            };
            // The guard ends with this statement: held in an `if let`
            // scrutinee it would live through the block below, which locks
            // the same (not reentrant) mutex: a deadlock that froze the
            // whole runtime when a lapsed lease came back after a Redis
            // restart.
            let replaced = self.held().insert(id.clone(), lease);
            if let Some(before) = replaced {
                // Already here (its lease lapsed during a stall and it was
                // requeued): the run there, if it has not stopped yet,
                // adopts the new claim and settles it; so does an outcome
                // still waiting for Redis.
                if let Some(now) = self.held().get_mut(&id) {
                    now.watch = before.watch;
                    now.watch.extend(valid_until(sent, self.config.lease));
                }
                for q in locked(&self.shared.pending).chunks_mut(5) {
                    if let [pending_id, pending_token, ..] = q
                        && *pending_id == id
                    {
                        pending_token.clone_from(&token);
                    }
                }
                continue;
            }
            let attempt = usize::try_from(attempt).unwrap_or(1).max(1);
            tasks.push(
                TaskBuilder::new(envelope)
                    .task_id(TaskId::from_string(id))
                    // The lifecycle layer adds one when the task starts, so
                    // handlers see the attempt counted in Redis.
                    .attempt(attempt - 1)
                    .max_attempts(J::MAX_ATTEMPTS as usize)
                    .data(Claim {
                        token: token.clone(),
                        lease: watch,
                        resumed: resumed == 1,
                    })
                    .build(),
            );
        }
        self.settle(undecodable, TRIES).await;
        if !drained.is_empty()
            && let Err(e) = super::release(&mut self.conn, &self.keys, &drained, false).await
        {
            tracing::warn!(queue = %self.keys.prefix, error = %e, jobs = drained.len(), "jobs claimed as the drain began not released, their leases will expire");
        }
        Ok(tasks)
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Envelope<J>>>,
        _worker: &WorkerContext,
    ) -> Result<u64, QueueError> {
        let held: Vec<(String, String)> = {
            let mut held = self.held();
            tasks
                .iter()
                .filter_map(|t| t.task_id().map(ToString::to_string))
                .filter_map(|id| held.remove(&id).map(|lease| (id, lease.token)))
                .collect()
        };
        Ok(release_retrying(&mut self.conn, &self.keys, &held, false).await)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<()>>,
        _worker: &WorkerContext,
    ) -> Result<(), QueueError> {
        let mut args = Vec::with_capacity(events.len() * 5);
        let now = now_ms();
        for event in events {
            let TaskEvent::Complete(result) = event else {
                continue;
            };
            let id = result.task_id.to_string();
            // Kept in `held` (its lease renewed) until the outcome is written.
            let Some(token) = self.held().get(&id).map(|l| l.token.clone()) else {
                continue;
            };
            let attempt = u32::try_from(result.attempt).unwrap_or(u32::MAX);
            let error = result.result.err().unwrap_or_default();
            let deferred = (result.status != Status::Done)
                .then(|| Deferral::parse(&error))
                .flatten();
            let how = match (result.status, deferred) {
                (Status::Done, _) => Settlement::Done,
                (_, Some((after, interrupted))) => {
                    let due_ms =
                        now.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
                    if interrupted {
                        Settlement::Interrupted { due_ms }
                    } else {
                        Settlement::Defer { due_ms }
                    }
                }
                // AbortError: the runner decided the job must not run again.
                (Status::Killed, None) => Settlement::Dead { error },
                _ if attempt >= J::MAX_ATTEMPTS => Settlement::Dead { error },
                _ => {
                    let delay =
                        u64::try_from(self.config.backoff(attempt).as_millis()).unwrap_or(u64::MAX);
                    Settlement::Retry {
                        due_ms: now.saturating_add(delay),
                    }
                }
            };
            // Recorded jobs are remembered as done for the sweep.
            super::settle_args(&mut args, &id, &token, &how, J::RECORDED);
        }
        self.settle(args, TRIES).await;
        Ok(())
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<Envelope<J>>>) -> Result<(), QueueError> {
        let jobs: Vec<(String, Envelope<J>)> = tasks
            .into_iter()
            .map(|t| {
                let id = t
                    .task_id()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| ulid::Ulid::generate().to_string());
                (id, t.args)
            })
            .collect();
        super::push(&mut self.conn, &self.keys, &jobs)
            .await
            .map(|_| ())
    }
}

/// [`super::release`] with retries. Jobs that cannot be released are
/// recovered when their lease expires, with an attempt counted.
pub(crate) async fn release_retrying(
    conn: &mut ConnectionManager,
    keys: &QueueKeys,
    jobs: &[(String, String)],
    started: bool,
) -> u64 {
    let mut pause = FIRST_PAUSE;
    for attempt in 1..=TRIES {
        match super::release(conn, keys, jobs, started).await {
            Ok(n) => return n,
            Err(e) if attempt < TRIES => {
                tracing::warn!(queue = %keys.prefix, error = %e, attempt, "jobs not given back yet, retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::error!(queue = %keys.prefix, error = %e, jobs = jobs.len(), "jobs not given back, they will be recovered when their lease expires");
            }
        }
    }
    0
}

/// Results are not stored: the job record in MongoDB holds them.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardResult;

#[derive(Debug, thiserror::Error)]
#[error("job results are not stored in the queue")]
pub struct ResultNotStored;

impl<T> Codec<T> for DiscardResult {
    type Error = ResultNotStored;
    type Compact = ();
    fn encode(&self, _: &T) -> Result<(), ResultNotStored> {
        Ok(())
    }
    fn decode(&self, _: &()) -> Result<T, ResultNotStored> {
        Err(ResultNotStored)
    }
}

type IdleWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The apalis backend of one job type. Build a fresh one per worker start.
pub struct RedisQueue<J: Job> {
    persist: Persisted<QueuePersistence<J>>,
    config: Arc<QueueConfig>,
    wake: Option<Arc<Notify>>,
    idle: Option<IdleWait>,
}

impl<J: Job> std::fmt::Debug for RedisQueue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.persist.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl<J: Job> RedisQueue<J> {
    /// `wake`: the process's wake-up listener; without it an idle worker
    /// only polls every `config.idle_poll`.
    pub fn new(
        conn: ConnectionManager,
        keys: QueueKeys,
        config: QueueConfig,
        wake: Option<&WakeHub>,
    ) -> Self {
        let keys = Arc::new(keys);
        let config = Arc::new(config);
        let wake = wake.map(|hub| hub.register(&keys.wake));
        Self {
            persist: Persisted::new(QueuePersistence {
                conn,
                keys,
                config: config.clone(),
                shared: Arc::default(),
                drain: None,
                _job: PhantomData,
            }),
            config,
            wake,
            idle: None,
        }
    }

    /// Takes part in `drain`: once it begins, this worker fetches and starts
    /// nothing more, keeps renewing and settling what it holds, and the
    /// drain releases what is still unfinished when its grace runs out.
    #[must_use]
    pub fn with_drain(mut self, drain: &Drain) -> Self {
        drain.register(&self.persist.shared, &self.persist.conn, &self.persist.keys);
        self.persist.drain = Some(drain.clone());
        self
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.persist.keys
    }

    /// Claims a batch without running it, as a worker that is killed right
    /// after its fetch would. For tests and tools.
    pub async fn claim_and_abandon(&self) -> Result<Vec<Task<Envelope<J>>>, QueueError> {
        let mut p = QueuePersistence::<J> {
            shared: Arc::default(),
            ..(*self.persist).clone()
        };
        p.fetch_next(&WorkerContext::new("abandoning")).await
    }

    fn idle_wait(&self) -> IdleWait {
        let poll = self.persist.fetch_pause();
        match self.wake.clone() {
            Some(notify) => Box::pin(async move {
                let _ = tokio::time::timeout(poll, notify.notified()).await;
            }),
            None => Box::pin(tokio::time::sleep(poll)),
        }
    }
}

impl<J: Job> Backend for RedisQueue<J> {
    type Task = Task<Envelope<J>>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persist.poll_ready(cx, worker, self.config.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, QueueError>>> {
        if self.persist.draining() {
            // Nothing more starts: claimed tasks waiting in the buffer go
            // back to the queue (by the drain), a fetch in flight finishes
            // (and gives its claims back itself).
            let unstarted = match self.persist.state_mut() {
                State::Buffered(buffer) => std::mem::take(buffer),
                _ => Default::default(),
            };
            self.persist.shared.give_back(unstarted);
            if matches!(self.persist.state(), State::Fetch(_))
                && let Poll::Ready(Some(Ok(task))) = self.persist.poll_next(cx, worker)
            {
                self.persist.shared.give_back([task]);
            }
            return Poll::Pending;
        }
        loop {
            if let Some(idle) = self.idle.as_mut() {
                match idle.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => self.idle = None,
                }
            }
            match self.persist.poll_next(cx, worker) {
                // Pending in state Ready means the fetch came back empty:
                // wait for a wake-up instead of fetching again at once.
                Poll::Pending if matches!(self.persist.state(), State::Ready) => {
                    self.idle = Some(self.idle_wait());
                }
                other => return other,
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persist.poll_close(cx, worker)
    }
}

impl<J: Job> BackendConfig for RedisQueue<J> {
    type Args = Envelope<J>;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<DiscardResult, ()>;

    fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        // Results only (no per-task lock round trip): the lease taken by the
        // fetch already marks the job as owned.
        self.persist
            .layer(DiscardResult, self.config.batch_size)
            .persist_results(true)
            .lock_tasks(false)
    }
}
