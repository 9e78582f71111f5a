//! Graceful drain of a worker process on shutdown (Sidekiq's shutdown
//! requeue). Once [`Drain::begin`] is called, the workers that take part
//! ([`super::RedisQueue::with_drain`]) fetch and start nothing more, jobs
//! they claimed but did not start go back to the queue at once, and running
//! jobs go on with their leases renewed. What still runs when the grace
//! period ends is given back to the front of its queue without counting an
//! attempt, instead of waiting for its lease to expire, and its next run is
//! told that it resumes (`Claim::resumed`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::QueueKeys;
use super::backend::{Shared, TRIES, locked, release_retrying};

/// Cheap to clone: every clone is the same drain.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    draining: AtomicBool,
    members: Mutex<Vec<Member>>,
}

/// One worker's queue: what it holds and how to reach it.
struct Member {
    shared: Weak<Shared>,
    conn: ConnectionManager,
    keys: Arc<QueueKeys>,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

/// A job that was still running when the grace period ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub job_id: String,
    pub tenant_id: String,
    /// The claim its run held: the job record is put back to QUEUED only if
    /// that claim still holds it.
    pub claim: String,
    queue: String,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(
        &self,
        shared: &Arc<Shared>,
        conn: &ConnectionManager,
        keys: &Arc<QueueKeys>,
    ) {
        let mut members = locked(&self.inner.members);
        members.retain(|m| m.shared.strong_count() > 0);
        members.push(Member {
            shared: Arc::downgrade(shared),
            conn: conn.clone(),
            keys: keys.clone(),
        });
    }

    /// Stops fetching: from now on the workers only finish what they run.
    pub fn begin(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    fn members(&self) -> Vec<(Arc<Shared>, ConnectionManager, Arc<QueueKeys>)> {
        locked(&self.inner.members)
            .iter()
            .filter_map(|m| {
                m.shared
                    .upgrade()
                    .map(|s| (s, m.conn.clone(), m.keys.clone()))
            })
            .collect()
    }

    /// Jobs the workers run whose outcome is not known yet (claimed jobs
    /// that will not start are not counted: they are given back).
    pub fn running(&self) -> usize {
        self.members()
            .iter()
            .map(|(shared, _, _)| {
                let pending = shared.pending_ids();
                let to_release = shared.to_release_ids();
                shared
                    .held()
                    .keys()
                    .filter(|id| !pending.contains(*id) && !to_release.contains(*id))
                    .count()
            })
            .sum()
    }

    /// Gives back the jobs workers claimed but will not start.
    async fn release_unstarted(&self) {
        for (shared, mut conn, keys) in self.members() {
            let jobs = shared.take_to_release();
            if !jobs.is_empty() {
                let n = release_retrying(&mut conn, &keys, &jobs, false).await;
                tracing::info!(queue = %keys.prefix, released = n, "claimed jobs that had not started given back to the queue");
            }
        }
    }

    /// Waits until no job runs any more or `grace` has passed, giving back
    /// unstarted jobs meanwhile. Returns how many jobs still run.
    pub async fn wait(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        loop {
            self.release_unstarted().await;
            let running = self.running();
            let now = Instant::now();
            if running == 0 || now >= deadline {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
        }
    }

    /// Takes the jobs that still run out of their workers' hands: their
    /// outcome will be ignored from now on. Outcomes waiting for Redis are
    /// written first (those jobs finished and are not taken). Then put
    /// their records back to QUEUED and [`Self::release`] them.
    pub async fn take_unfinished(&self) -> Vec<Unfinished> {
        self.release_unstarted().await;
        let mut out = Vec::new();
        for (shared, mut conn, keys) in self.members() {
            shared.settle(&mut conn, &keys, Vec::new(), TRIES).await;
            let pending = shared.pending_ids();
            let mut held = shared.held();
            let ids: Vec<String> = held
                .keys()
                .filter(|id| !pending.contains(*id))
                .cloned()
                .collect();
            for id in ids {
                if let Some(lease) = held.remove(&id) {
                    out.push(Unfinished {
                        job_id: id,
                        tenant_id: lease.tenant,
                        claim: lease.token,
                        queue: keys.prefix.clone(),
                    });
                }
            }
        }
        out
    }

    /// Gives `jobs` back to the front of their queues without counting an
    /// attempt; their next runs are told that they resume. Returns how many
    /// were still held and so released.
    pub async fn release(&self, jobs: &[Unfinished]) -> u64 {
        let mut by_queue: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for job in jobs {
            by_queue
                .entry(job.queue.as_str())
                .or_default()
                .push((job.job_id.clone(), job.claim.clone()));
        }
        let mut released = 0;
        for (_, mut conn, keys) in self.members() {
            if let Some(jobs) = by_queue.remove(keys.prefix.as_str()) {
                released += release_retrying(&mut conn, &keys, &jobs, true).await;
            }
        }
        released
    }
}
