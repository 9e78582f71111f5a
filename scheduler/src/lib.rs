//! Cron schedules that enqueue platform jobs. Safe to run as several
//! replicas: every replica sees every tick, and a `SET NX` on the tick's key
//! in Redis lets exactly one of them enqueue it.

use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use aigentable_jobs::record::system_tenant;
use aigentable_jobs::types::{RollupAnalytics, RunBackup, Sweep};
use aigentable_jobs::{Job, JobClient, Requester};
use aigentable_platform::{Kv, Platform};

/// What a schedule enqueues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Sweep,
    Rollup,
    Backup,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Sweep => "sweep",
            Task::Rollup => "rollup",
            Task::Backup => "backup",
        }
    }
}

/// One cron schedule, e.g. `0 * * * * *` (seconds first).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub task: Task,
    pub cron: cron::Schedule,
}

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} is invalid: '{value}' is not a cron expression ({reason})")]
pub struct ScheduleError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Schedules from `SCHEDULE_SWEEP`, `SCHEDULE_ROLLUP`, `SCHEDULE_BACKUP`
/// (an empty value disables one).
pub fn schedules_from(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Schedule>, ScheduleError> {
    let mut out = Vec::new();
    for (task, name, default) in [
        (Task::Sweep, "SCHEDULE_SWEEP", "0 * * * * *"),
        (Task::Rollup, "SCHEDULE_ROLLUP", "0 5 * * * *"),
        (Task::Backup, "SCHEDULE_BACKUP", "0 30 3 * * *"),
    ] {
        let value = lookup(name).unwrap_or_else(|| default.to_owned());
        if value.trim().is_empty() {
            continue;
        }
        let cron = cron::Schedule::from_str(value.trim()).map_err(|e| ScheduleError {
            name,
            value: value.clone(),
            reason: e.to_string(),
        })?;
        out.push(Schedule { task, cron });
    }
    Ok(out)
}

/// Prometheus metrics of the scheduler process.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    pub registry: prometheus::Registry,
    /// Ticks by schedule and outcome: `enqueued`, `claimed_elsewhere`, `failed`.
    pub ticks: prometheus::IntCounterVec,
    pub restarts: prometheus::IntCounter,
}

impl SchedulerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = prometheus::Registry::new_custom(Some("aigentable".to_owned()), None)?;
        let ticks = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "scheduler_ticks_total",
                "Cron ticks by schedule and outcome",
            ),
            &["schedule", "outcome"],
        )?;
        let restarts = prometheus::IntCounter::new(
            "scheduler_restarts_total",
            "Schedules restarted after an error",
        )?;
        registry.register(Box::new(ticks.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        Ok(Self {
            registry,
            ticks,
            restarts,
        })
    }
}

#[derive(Clone)]
struct Entry {
    task: Task,
    client: JobClient,
    kv: Kv,
    metrics: SchedulerMetrics,
}

/// Claims a tick for this replica; false when another replica already has it.
pub async fn claim(kv: &Kv, task: Task, tick: u64) -> redis::RedisResult<bool> {
    let mut conn = kv.conn();
    let claimed: Option<String> = redis::cmd("SET")
        .arg(kv.key(&["cron", task.name(), &tick.to_string()]))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(7 * 24 * 3600)
        .query_async(&mut conn)
        .await?;
    Ok(claimed.is_some())
}

async fn enqueue<J: Job>(client: &JobClient, job: J) -> Result<String, BoxDynError> {
    Ok(client
        .enqueue(&system_tenant(), Requester::System, job)
        .await?
        .id)
}

/// Enqueues the job of one tick, unless another replica already did.
pub async fn fire(
    client: &JobClient,
    kv: &Kv,
    task: Task,
    tick: u64,
) -> Result<Option<String>, BoxDynError> {
    if !claim(kv, task, tick).await? {
        tracing::debug!(
            schedule = task.name(),
            tick,
            "tick already claimed by another replica"
        );
        return Ok(None);
    }
    let at: DateTime<Utc> =
        DateTime::from_timestamp(i64::try_from(tick).unwrap_or(0), 0).unwrap_or_else(Utc::now);
    let id = match task {
        Task::Sweep => {
            enqueue(
                client,
                Sweep {
                    tick: at.to_rfc3339(),
                },
            )
            .await?
        }
        Task::Rollup => {
            // Roll up the last complete hour.
            let hour = at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at) - TimeDelta::hours(1);
            enqueue(
                client,
                RollupAnalytics {
                    hour: hour.to_rfc3339(),
                },
            )
            .await?
        }
        Task::Backup => {
            let backup_id = aigentable_platform::ids::new_id();
            enqueue(client, RunBackup { backup_id }).await?
        }
    };
    tracing::info!(schedule = task.name(), tick, job_id = %id, "scheduled job enqueued");
    Ok(Some(id))
}

async fn on_tick(tick: Tick, entry: Data<Entry>) -> Result<(), BoxDynError> {
    let outcome = fire(&entry.client, &entry.kv, entry.task, tick.get_timestamp()).await;
    let label = match &outcome {
        Ok(Some(_)) => "enqueued",
        Ok(None) => "claimed_elsewhere",
        Err(e) => {
            tracing::error!(schedule = entry.task.name(), error = %e, "scheduled job could not be enqueued");
            "failed"
        }
    };
    entry
        .metrics
        .ticks
        .with_label_values(&[entry.task.name(), label])
        .inc();
    outcome.map(|_| ())
}

/// Runs the schedules until `shutdown` resolves.
pub async fn run(
    platform: Platform,
    schedules: Vec<Schedule>,
    metrics: SchedulerMetrics,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let client = JobClient::connect(&platform).await?;
    let mut monitor = Monitor::new();
    for schedule in schedules {
        let entry = Entry {
            task: schedule.task,
            client: client.clone(),
            kv: platform.kv.clone(),
            metrics: metrics.clone(),
        };
        let cron = schedule.cron.clone();
        tracing::info!(schedule = schedule.task.name(), cron = %schedule.cron, "schedule registered");
        monitor = monitor.register(move |restarts| {
            if restarts > 0 {
                entry.metrics.restarts.inc();
            }
            WorkerBuilder::new(format!(
                "cron-{}-{}-{restarts}",
                entry.task.name(),
                std::process::id()
            ))
            .backend(CronScheduler::new(cron.clone()))
            .data(entry.clone())
            .build(on_tick)
        });
    }
    monitor
        .should_restart(|_ctx, err| {
            tracing::warn!(error = %err, "schedule stopped, restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(10))
        .run_with_signal(shutdown)
        .await?;
    Ok(())
}
