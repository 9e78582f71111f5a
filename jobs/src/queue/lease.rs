//! What a worker knows of a lease it holds, for the run under it.
//!
//! A lease in Redis lapses at a deadline the worker set (its clock plus
//! [`QueueConfig::lease`](super::QueueConfig::lease)); after that any
//! worker may reap the job and run it again. A worker cut off from Redis (a
//! network partition, a Redis failover) cannot learn that, so its run
//! stops itself before the deadline it last managed to set: a job never
//! runs twice at once. The margin is a sixth of the lease, the renewal
//! period the workers binary uses, which also covers a small clock skew
//! between workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::locked;

/// The lease of one claim, shared by the backend (which renews it) and the
/// run (which stops when it lapses).
#[derive(Debug, Clone)]
pub struct LeaseWatch(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Until when the lease is certainly still ours.
    valid_until: std::sync::Mutex<Instant>,
    lost: AtomicBool,
    changed: Notify,
}

/// Until when a lease whose deadline was computed at `sent` is certainly
/// ours.
pub(crate) fn valid_until(sent: Instant, lease: Duration) -> Instant {
    sent + lease.saturating_sub(lease / 6)
}

impl LeaseWatch {
    pub(crate) fn new(valid_until: Instant) -> Self {
        Self(Arc::new(Inner {
            valid_until: std::sync::Mutex::new(valid_until),
            lost: AtomicBool::new(false),
            changed: Notify::new(),
        }))
    }

    /// A lease that never lapses, for runs outside a queue (tests, tools).
    pub fn unbounded() -> Self {
        Self::new(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600))
    }

    /// The lease was renewed; it holds until `until`. A lost lease stays
    /// lost.
    pub(crate) fn extend(&self, until: Instant) {
        let mut valid = locked(&self.0.valid_until);
        if until > *valid {
            *valid = until;
        }
    }

    /// Redis says the lease is no longer ours (it lapsed and was reaped).
    pub(crate) fn lose(&self) {
        self.0.lost.store(true, Ordering::SeqCst);
        self.0.changed.notify_one();
    }

    pub fn is_lost(&self) -> bool {
        self.0.lost.load(Ordering::SeqCst)
    }

    /// Resolves once the lease is lost, or may have lapsed because no
    /// renewal succeeded in time. From then on the run must stop.
    pub async fn lapsed(&self) {
        loop {
            if self.is_lost() {
                return;
            }
            let until = *locked(&self.0.valid_until);
            if Instant::now() >= until {
                self.0.lost.store(true, Ordering::SeqCst);
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.0.changed.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_renewed_lease_holds_and_an_unrenewed_one_lapses() {
        let lease = Duration::from_millis(600);
        let start = Instant::now();
        let watch = LeaseWatch::new(valid_until(start, lease));
        let lapsed = tokio::spawn({
            let watch = watch.clone();
            async move {
                watch.lapsed().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        let renewed = Instant::now();
        watch.extend(valid_until(renewed, lease));
        let at = lapsed.await.expect("watch");
        assert!(
            at >= renewed + Duration::from_millis(500),
            "held until 5/6 of a lease after the renewal: {:?}",
            at - start
        );
        assert!(watch.is_lost());
    }

    #[tokio::test]
    async fn a_lease_redis_says_is_lost_lapses_at_once() {
        let watch = LeaseWatch::new(valid_until(Instant::now(), Duration::from_secs(60)));
        let start = Instant::now();
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.lapsed().await }
        });
        tokio::task::yield_now().await;
        watch.lose();
        waiting.await.expect("watch");
        assert!(Instant::now() - start < Duration::from_secs(30));
        watch.extend(Instant::now() + Duration::from_secs(60));
        assert!(
            watch.is_lost(),
            "a renewal does not bring a lost lease back"
        );
    }
}
