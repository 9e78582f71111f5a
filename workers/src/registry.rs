//! The one registration list: which job types run on which queues.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use redis::aio::ConnectionManager;
use tokio_util::task::AbortOnDropHandle;

use aigentable_jobs::Queue;
use aigentable_jobs::queue::{self, Drain, QueueConfig, QueueKeys, RedisQueue, WakeHub, heartbeat};
use aigentable_jobs::record;

use crate::WorkerState;
use crate::metrics::Metrics;
use crate::runner::{Handle, run_job};

/// Registers a worker for every job type of [`aigentable_jobs::for_each_job_type!`]
/// whose queue `wants` selects. A type without a [`Handle`] impl (its file
/// in `handlers/`) does not build.
fn register_all(
    monitor: Monitor,
    setup: &WorkerSetup,
    wants: &dyn Fn(Queue) -> bool,
) -> Registered {
    let mut r = Registered {
        monitor,
        keys: Vec::new(),
    };
    macro_rules! add_each {
        ($($t:path),* $(,)?) => { $( r.add::<$t>(setup, wants); )* };
    }
    aigentable_jobs::for_each_job_type!(add_each);
    r
}

/// How many jobs of one type a worker process runs at once.
#[derive(Clone, Debug, Default)]
pub struct Concurrency {
    /// For every queue without its own setting (`--concurrency`, `WORKER_CONCURRENCY`).
    pub default: Option<usize>,
    /// Per queue (`WORKER_CONCURRENCY_<QUEUE>`).
    pub per_queue: std::collections::HashMap<Queue, usize>,
}

impl Concurrency {
    pub fn for_queue(&self, queue: Queue) -> usize {
        self.per_queue
            .get(&queue)
            .copied()
            .or(self.default)
            .unwrap_or_else(|| queue.default_concurrency())
            .max(1)
    }

    /// Reads `WORKER_CONCURRENCY_<QUEUE>` for every known queue through `lookup`.
    pub fn from_lookup(
        default: Option<usize>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut per_queue = std::collections::HashMap::new();
        for queue in Queue::ALL {
            let name = queue.concurrency_variable();
            if let Some(raw) = lookup(&name).filter(|v| !v.trim().is_empty()) {
                let n: usize = raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "environment variable {name} must be a positive number, got '{raw}'"
                    )
                })?;
                per_queue.insert(queue, n);
            }
        }
        Ok(Self { default, per_queue })
    }
}

impl From<usize> for Concurrency {
    fn from(n: usize) -> Self {
        Self {
            default: Some(n.max(1)),
            per_queue: std::collections::HashMap::new(),
        }
    }
}

/// Everything a worker of any job type needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerSetup {
    pub state: WorkerState,
    pub conn: ConnectionManager,
    /// `None`: idle workers only poll (tests of the fallback).
    pub wake: Option<WakeHub>,
    pub metrics: Metrics,
    /// Jobs run at the same time per job type, by queue.
    pub concurrency: Concurrency,
    pub queue: QueueConfig,
    /// Shared by the workers registered with this setup; begun by
    /// [`supervise_draining`] on shutdown.
    pub drain: Drain,
}

impl WorkerSetup {
    /// Connects the queue connection and the wake-up listener of the
    /// platform's Redis.
    pub async fn connect(
        state: WorkerState,
        concurrency: impl Into<Concurrency>,
    ) -> anyhow::Result<Self> {
        let url = state.platform.config.redis_url.expose().clone();
        let conn = queue::connect(&url).await?;
        let wake = WakeHub::start(&url, &state.platform.config.redis_namespace).await?;
        Ok(Self {
            state,
            conn,
            wake: Some(wake),
            metrics: Metrics::new()?,
            concurrency: concurrency.into(),
            queue: QueueConfig::default(),
            drain: Drain::new(),
        })
    }
}

/// A monitor with its workers, and the keys of the queues they serve.
pub struct Registered {
    pub monitor: Monitor,
    pub keys: Vec<(Queue, &'static str, QueueKeys)>,
}

impl Registered {
    fn add<J: Handle>(&mut self, setup: &WorkerSetup, wants: &dyn Fn(Queue) -> bool) {
        if !wants(J::QUEUE) {
            return;
        }
        let monitor = std::mem::take(&mut self.monitor);
        self.monitor = register::<J>(monitor, setup);
        self.keys.push((
            J::QUEUE,
            J::NAME,
            QueueKeys::for_job::<J>(&setup.state.platform.config.redis_namespace),
        ));
    }
}

fn unique_name(job: &str, restarts: usize) -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".to_owned());
    // Unique per start, so that logs tell a restarted worker apart.
    let nonce = ulid::Ulid::generate().to_string();
    format!(
        "{job}@{host}-{}-{restarts}-{}",
        std::process::id(),
        &nonce[nonce.len() - 6..]
    )
}

/// Grows with the number of restarts so far, so that a Redis outage does
/// not turn restarts into a busy loop; the first restart is quick.
fn restart_delay(restarts: usize) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(restarts - 1).unwrap_or(u32::MAX).min(6);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(Duration::from_secs(5))
}

/// Adds a worker for job type `J` to `monitor`. Public so that tests and
/// tools can run job types of their own.
pub fn register<J: Handle>(monitor: Monitor, setup: &WorkerSetup) -> Monitor {
    let setup = Arc::new(setup.clone());
    let keys = QueueKeys::for_job::<J>(&setup.state.platform.config.redis_namespace);
    let job_metrics = setup.metrics.for_job(J::QUEUE.as_str(), J::NAME);
    monitor.register(move |restarts| {
        if restarts > 0 {
            job_metrics.restarts.inc();
        }
        let concurrency = setup.concurrency.for_queue(J::QUEUE);
        let config = QueueConfig {
            restart_delay: restart_delay(restarts),
            concurrency,
            ..setup.queue.clone()
        };
        let backend = RedisQueue::<J>::new(
            setup.conn.clone(),
            keys.clone(),
            config,
            setup.wake.as_ref(),
        )
        .with_drain(&setup.drain);
        WorkerBuilder::new(unique_name(J::NAME, restarts))
            .backend(backend)
            .concurrency(concurrency)
            // Each job on its own task: a handler busy on the CPU cannot
            // hold up the heartbeats or the other jobs of this worker. A
            // job whose worker is dropped is aborted with it, never left
            // running after its lease was given back.
            .parallelize(|job| AbortOnDropHandle::new(tokio::spawn(job)))
            .data(setup.state.clone())
            .data(job_metrics.clone())
            .build(run_job::<J>)
    })
}

/// Parses `--queues`: every name must be one of [`Queue::ALL`].
pub fn parse_queues(names: &[String]) -> anyhow::Result<Vec<Queue>> {
    names
        .iter()
        .map(|n| n.parse::<Queue>().map_err(anyhow::Error::from))
        .collect()
}

/// Runs workers for `queues` (all but the opt-in ones when empty) until
/// `shutdown` resolves, then lets running jobs finish for up to `grace`.
pub async fn run(
    state: WorkerState,
    queues: &[Queue],
    concurrency: impl Into<Concurrency>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let setup = WorkerSetup::connect(state, concurrency).await?;
    run_with(setup, queues, grace, shutdown).await
}

/// [`run`] with a prepared setup (its metrics, its queue tuning).
pub async fn run_with(
    setup: WorkerSetup,
    queues: &[Queue],
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let wants = |queue: Queue| {
        if queues.is_empty() {
            !queue.opt_in()
        } else {
            queues.contains(&queue)
        }
    };
    let Registered { monitor, keys } = register_all(Monitor::new(), &setup, &wants);
    if keys.is_empty() {
        anyhow::bail!("no job type has a handler on the requested queues");
    }
    let depth = tokio::spawn(report_depth(
        setup.conn.clone(),
        setup.metrics.clone(),
        keys,
    ));
    let served: Vec<&'static str> = Queue::ALL
        .into_iter()
        .filter(|q| wants(*q))
        .map(Queue::as_str)
        .collect();
    let namespace = setup.state.platform.config.redis_namespace.clone();
    let process = unique_name("workers", 0);
    let beats = tokio::spawn(beat(
        setup.conn.clone(),
        namespace.clone(),
        process.clone(),
        served,
    ));
    let result = supervise_draining(monitor, &setup, grace, shutdown).await;
    depth.abort();
    beats.abort();
    let mut conn = setup.conn.clone();
    if let Err(e) = heartbeat::leave(&mut conn, &namespace, &process).await {
        tracing::debug!(error = %e, "leaving the live workers failed; the entry expires");
    }
    result
}

/// Tells the platform this process is alive and what it serves
/// (`GET /system/metrics` counts it), until aborted.
async fn beat(
    mut conn: ConnectionManager,
    namespace: String,
    process: String,
    served: Vec<&'static str>,
) {
    let mut tick = tokio::time::interval(heartbeat::EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat::beat(&mut conn, &namespace, &process, &served).await {
            tracing::debug!(error = %e, "worker heartbeat not written");
        }
    }
}

/// Runs `monitor` until `shutdown`, restarting any worker that stops on an
/// error (a fetch that timed out, a dropped connection): a process must
/// never be left without a live worker for its queues.
pub async fn supervise(
    monitor: Monitor,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    monitor
        .should_restart(|ctx, err| {
            // Counted per job type where the worker is rebuilt (`register`);
            // logged here, where the error is known.
            tracing::error!(worker = ctx.name(), error = %err, "worker stopped, restarting");
            true
        })
        .shutdown_timeout(grace)
        .run_with_signal(shutdown)
        .await?;
    Ok(())
}

/// How long the workers get to stop once a drain has given back what they
/// still ran: only the dropping of those runs is left.
const FINAL_STOP: Duration = Duration::from_secs(1);

/// [`supervise`] with a graceful drain on `shutdown`: the workers of
/// `setup` stop fetching, running jobs get up to `grace` to finish (their
/// leases renewed), claimed jobs that had not started go back to the queue
/// at once, and jobs still running when the grace ends are given back to
/// the front of their queue without spending an attempt (their records back
/// to QUEUED), instead of waiting for their leases to expire.
pub async fn supervise_draining(
    monitor: Monitor,
    setup: &WorkerSetup,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let drain = setup.drain.clone();
    let db = setup.state.platform.db.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut workers = tokio::spawn(supervise(monitor, FINAL_STOP, async move {
        let _ = stopped.await;
        Ok(())
    }));
    tokio::select! {
        result = &mut workers => return result?,
        signal = shutdown => {
            if let Err(e) = signal {
                tracing::warn!(error = %e, "shutdown signal failed, stopping anyway");
            }
        }
    }
    drain.begin();
    tracing::info!(
        running = drain.running(),
        grace_secs = grace.as_secs_f64(),
        "stopping: no new jobs, waiting for running ones"
    );
    let left = drain.wait(grace).await;
    if left > 0 {
        let unfinished = drain.take_unfinished().await;
        let runs: Vec<(&str, &str, &str)> = unfinished
            .iter()
            .map(|j| (j.tenant_id.as_str(), j.job_id.as_str(), j.claim.as_str()))
            .collect();
        if let Err(e) = record::mark_all_released(
            &db,
            &runs,
            "its worker shut down before it finished; it runs again",
        )
        .await
        {
            tracing::error!(jobs = runs.len(), error = %e, "records of jobs given back could not be reset; the sweep requeues them");
        }
        let released = drain.release(&unfinished).await;
        tracing::warn!(
            released,
            "jobs still running at the end of the grace period given back to the queue, no attempt spent"
        );
    }
    let _ = stop.send(());
    workers.await?
}

/// Keeps the queue depth gauges current while the workers run.
async fn report_depth(
    mut conn: ConnectionManager,
    metrics: Metrics,
    keys: Vec<(Queue, &'static str, QueueKeys)>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Aborted by `run_with` when the workers stop.
    loop {
        tick.tick().await;
        for (queue, job, k) in &keys {
            match queue::depth(&mut conn, k).await {
                Ok(d) => {
                    for (state, n) in [
                        ("ready", d.ready),
                        ("delayed", d.delayed),
                        ("inflight", d.inflight),
                        ("dead", d.dead),
                    ] {
                        metrics
                            .depth
                            .with_label_values(&[queue.as_str(), job, state])
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                    metrics
                        .oldest_wait
                        .with_label_values(&[queue.as_str(), job])
                        .set(d.oldest_wait.as_secs_f64());
                }
                Err(e) => tracing::debug!(queue = %queue, error = %e, "queue depth unavailable"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aigentable_jobs::Queue;

    use super::Concurrency;

    #[test]
    fn per_queue_settings_override_the_default_and_the_built_ins() -> anyhow::Result<()> {
        let c = Concurrency::from_lookup(None, &|n| {
            (n == "WORKER_CONCURRENCY_REPLIES").then(|| "5".to_owned())
        })?;
        assert_eq!(c.for_queue(Queue::Replies), 5);
        assert_eq!(c.for_queue(Queue::Bench), 64, "built-in default");
        assert_eq!(c.for_queue(Queue::Ingest), 2, "built-in default");
        let c = Concurrency::from_lookup(Some(3), &|n| {
            (n == "WORKER_CONCURRENCY_EMAILS").then(|| "7".to_owned())
        })?;
        assert_eq!(
            c.for_queue(Queue::Bench),
            3,
            "WORKER_CONCURRENCY applies to every queue"
        );
        assert_eq!(c.for_queue(Queue::Emails), 7, "a queue's own setting wins");
        let bad = Concurrency::from_lookup(None, &|n| {
            (n == "WORKER_CONCURRENCY_EMAILS").then(|| "0".to_owned())
        });
        assert!(bad.is_err_and(|e| e.to_string().contains("WORKER_CONCURRENCY_EMAILS")));
        Ok(())
    }
}
