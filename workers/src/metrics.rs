//! Prometheus metrics of a workers process, served at `GET /metrics` on
//! `WORKER_METRICS_PORT` (default 9101, 0 disables) by the platform's
//! metrics server.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Outcome of one job run, the `outcome` label of `jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed, will be retried with backoff.
    Retried,
    /// Failed permanently (retrying cannot help).
    Failed,
    /// Failed on its last attempt, or interrupted too often.
    Dead,
    /// Not run: cancelled, already finished or unknown record.
    Skipped,
    /// Gave its slot back to wait for other work; runs again later.
    Deferred,
    /// Stopped because its lease lapsed; runs again.
    Stopped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
            Outcome::Skipped => "skipped",
            Outcome::Deferred => "deferred",
            Outcome::Stopped => "stopped",
        }
    }
    const ALL: [Outcome; 7] = [
        Outcome::Succeeded,
        Outcome::Retried,
        Outcome::Failed,
        Outcome::Dead,
        Outcome::Skipped,
        Outcome::Deferred,
        Outcome::Stopped,
    ];
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub jobs: IntCounterVec,
    pub duration: HistogramVec,
    pub depth: IntGaugeVec,
    /// `queue`, `job`: how long the job that has waited longest has waited.
    pub oldest_wait: GaugeVec,
    pub restarts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("aigentable".to_owned()), None)?;
        let jobs = IntCounterVec::new(
            Opts::new("jobs_total", "Job runs by queue, job type and outcome"),
            &["queue", "job", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("job_duration_seconds", "Job run time by queue and job type")
                .buckets(vec![
                    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0,
                ]),
            &["queue", "job"],
        )?;
        let depth = IntGaugeVec::new(
            Opts::new(
                "queue_jobs",
                "Jobs in the queue by state (ready, delayed, inflight, dead)",
            ),
            &["queue", "job", "state"],
        )?;
        let oldest_wait = GaugeVec::new(
            Opts::new(
                "queue_oldest_job_age_seconds",
                "How long the job that has waited longest for a worker has waited (0 when none waits)",
            ),
            &["queue", "job"],
        )?;
        let restarts = IntCounterVec::new(
            Opts::new(
                "worker_restarts_total",
                "Workers restarted after a queue error (Redis slow or down)",
            ),
            &["queue", "job"],
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(oldest_wait.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        Ok(Self {
            registry,
            jobs,
            duration,
            depth,
            oldest_wait,
            restarts,
        })
    }

    /// The per-job-type handles, resolved once so that a job run costs no
    /// label lookup.
    pub fn for_job(&self, queue: &str, job: &str) -> JobMetrics {
        let outcomes = Outcome::ALL.map(|o| self.jobs.with_label_values(&[queue, job, o.as_str()]));
        JobMetrics {
            outcomes,
            duration: self.duration.with_label_values(&[queue, job]),
            restarts: self.restarts.with_label_values(&[queue, job]),
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Metrics of one job type.
#[derive(Clone, Debug)]
pub struct JobMetrics {
    outcomes: [IntCounter; 7],
    duration: Histogram,
    pub restarts: IntCounter,
}

impl JobMetrics {
    pub fn record(&self, outcome: Outcome, elapsed: Duration) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].get()
    }
}
