//! The one registration list: which job types run on which queues.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use redis::aio::ConnectionManager;

use aigentable_jobs::queue::{self, Drain, QueueConfig, QueueKeys, RedisQueue, WakeHub};
use aigentable_jobs::record;
use aigentable_jobs::types::{
    self, IngestDocument, Noop, PurgeDocument, RollupAnalytics, RunBackup, SearchKnowledge,
    SendEmail, Sweep,
};
use aigentable_platform::ids::TenantId;

use crate::WorkerState;
use crate::metrics::Metrics;
use crate::runner::{Handle, run_job};

/// Registers every job type that has a handler: one line per type.
fn register_all(monitor: Monitor, setup: &WorkerSetup, wants: &dyn Fn(&str) -> bool) -> Registered {
    let mut r = Registered {
        monitor,
        keys: Vec::new(),
    };
    r.add::<SendEmail>(setup, wants);
    r.add::<Noop>(setup, wants);
    r.add::<Sweep>(setup, wants);
    r.add::<RollupAnalytics>(setup, wants);
    r.add::<types::ExportAnalytics>(setup, wants);
    r.add::<RunBackup>(setup, wants);
    r.add::<IngestDocument>(setup, wants);
    r.add::<PurgeDocument>(setup, wants);
    r.add::<SearchKnowledge>(setup, wants);
    r.add::<types::TestAiProvider>(setup, wants);
    r.add::<types::TrainAgent>(setup, wants);
    r.add::<types::ProcessInbound>(setup, wants);
    r.add::<types::GenerateReply>(setup, wants);
    r.add::<types::DeliverMessage>(setup, wants);
    r.add::<types::TestChannel>(setup, wants);
    r.add::<types::RegisterWebhook>(setup, wants);
    r
}

/// How many jobs of one type a worker process runs at once.
#[derive(Clone, Debug, Default)]
pub struct Concurrency {
    /// For every queue without its own setting (`--concurrency`, `WORKER_CONCURRENCY`).
    pub default: Option<usize>,
    /// Per queue (`WORKER_CONCURRENCY_<QUEUE>`).
    pub per_queue: std::collections::HashMap<String, usize>,
}

impl Concurrency {
    pub fn for_queue(&self, queue: &str) -> usize {
        self.per_queue
            .get(queue)
            .copied()
            .or(self.default)
            .unwrap_or_else(|| types::default_concurrency(queue))
            .max(1)
    }

    /// Reads `WORKER_CONCURRENCY_<QUEUE>` for every known queue through `lookup`.
    pub fn from_lookup(
        default: Option<usize>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut per_queue = std::collections::HashMap::new();
        for queue in types::ALL_QUEUES.iter().chain(types::OPT_IN_QUEUES) {
            let name = format!("WORKER_CONCURRENCY_{}", queue.to_uppercase());
            if let Some(raw) = lookup(&name).filter(|v| !v.trim().is_empty()) {
                let n: usize = raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "environment variable {name} must be a positive number, got '{raw}'"
                    )
                })?;
                per_queue.insert((*queue).to_owned(), n);
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
    pub keys: Vec<(&'static str, &'static str, QueueKeys)>,
}

impl Registered {
    fn add<J: Handle>(&mut self, setup: &WorkerSetup, wants: &dyn Fn(&str) -> bool) {
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
    let job_metrics = setup.metrics.for_job(J::QUEUE, J::NAME);
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
            .data(setup.state.clone())
            .data(job_metrics.clone())
            .build(run_job::<J>)
    })
}

/// Checks `--queues`: every name must be a queue of [`types::ALL_QUEUES`]
/// or [`types::OPT_IN_QUEUES`].
pub fn validate_queues(queues: &[String]) -> anyhow::Result<()> {
    for q in queues {
        if !types::ALL_QUEUES.contains(&q.as_str()) && !types::OPT_IN_QUEUES.contains(&q.as_str()) {
            anyhow::bail!(
                "unknown queue '{q}'; known queues: {}",
                types::ALL_QUEUES
                    .iter()
                    .chain(types::OPT_IN_QUEUES)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    Ok(())
}

/// Runs workers for `queues` (all but the opt-in ones when empty) until
/// `shutdown` resolves, then lets running jobs finish for up to `grace`.
pub async fn run(
    state: WorkerState,
    queues: &[String],
    concurrency: impl Into<Concurrency>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    validate_queues(queues)?;
    let setup = WorkerSetup::connect(state, concurrency).await?;
    run_with(setup, queues, grace, shutdown).await
}

/// [`run`] with a prepared setup (its metrics, its queue tuning).
pub async fn run_with(
    setup: WorkerSetup,
    queues: &[String],
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    validate_queues(queues)?;
    let wants = |queue: &str| {
        if queues.is_empty() {
            !types::OPT_IN_QUEUES.contains(&queue)
        } else {
            queues.iter().any(|q| q == queue)
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
    let result = supervise_draining(monitor, &setup, grace, shutdown).await;
    depth.abort();
    result
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
        for job in &unfinished {
            let tenant = TenantId::from_trusted(job.tenant_id.clone());
            if let Err(e) = record::mark_released(&db, &tenant, &job.job_id, &job.claim).await {
                tracing::error!(job_id = %job.job_id, tenant_id = %job.tenant_id, error = %e, "record of a job given back could not be reset; the sweep requeues it");
            }
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
    keys: Vec<(&'static str, &'static str, QueueKeys)>,
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
                            .with_label_values(&[queue, job, state])
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                }
                Err(e) => tracing::debug!(queue = %queue, error = %e, "queue depth unavailable"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Concurrency;

    #[test]
    fn per_queue_settings_override_the_default_and_the_built_ins() -> anyhow::Result<()> {
        let c = Concurrency::from_lookup(None, &|n| {
            (n == "WORKER_CONCURRENCY_REPLIES").then(|| "5".to_owned())
        })?;
        assert_eq!(c.for_queue("replies"), 5);
        assert_eq!(c.for_queue("bench"), 64, "built-in default");
        assert_eq!(c.for_queue("ingest"), 2, "built-in default");
        let c = Concurrency::from_lookup(Some(3), &|n| {
            (n == "WORKER_CONCURRENCY_EMAILS").then(|| "7".to_owned())
        })?;
        assert_eq!(
            c.for_queue("bench"),
            3,
            "WORKER_CONCURRENCY applies to every queue"
        );
        assert_eq!(c.for_queue("emails"), 7, "a queue's own setting wins");
        let bad = Concurrency::from_lookup(None, &|n| {
            (n == "WORKER_CONCURRENCY_EMAILS").then(|| "0".to_owned())
        });
        assert!(bad.is_err_and(|e| e.to_string().contains("WORKER_CONCURRENCY_EMAILS")));
        Ok(())
    }
}
