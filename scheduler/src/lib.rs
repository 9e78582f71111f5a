//! Cron schedules that enqueue platform jobs. Safe to run as several
//! replicas: every replica sees every tick, and a claim on the tick's key in
//! Redis lets exactly one of them enqueue it.
//!
//! A claim is `pending` (expiring after [`PENDING`], by Redis's clock) until
//! its job is enqueued; then it names the job and the schedule's `last`
//! tick moves on. A replica that dies between its claim and its enqueue, or
//! an enqueue that fails, leaves the tick unclaimed again, and a tick
//! missed while no scheduler ran is fired late: at start and at every tick,
//! the latest scheduled time after `last` that nobody fired is caught up,
//! once (not every missed one).

pub mod cli;

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use redis::Script;

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
    /// Ticks by schedule and outcome: `enqueued`, `claimed_elsewhere`,
    /// `caught_up` (a missed tick fired late), `failed`.
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
    schedule: Schedule,
    client: JobClient,
    kv: Kv,
    metrics: SchedulerMetrics,
}

/// How long a claimed tick may wait for its enqueue before another replica
/// may fire it.
pub const PENDING: Duration = Duration::from_secs(30);
/// How long a fired tick is remembered (longer than any schedule's period
/// that catching up looks back over).
const KEEP_SECS: u64 = 8 * 24 * 3600;
/// Catching up looks back at most this far.
const LOOK_BACK: TimeDelta = TimeDelta::days(8);

/// KEYS: tick, last. ARGV: tick, job id, keep s. The tick's job is queued:
/// the claim names it for good and `last` moves on.
static SETTLE_TICK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
",
    )
});

/// KEYS: tick. Gives back a claim whose enqueue failed.
static RELEASE_TICK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == 'pending' then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

fn tick_key(kv: &Kv, task: Task, tick: u64) -> String {
    kv.key(&["cron", task.name(), &tick.to_string()])
}

fn last_key(kv: &Kv, task: Task) -> String {
    kv.key(&["cron", task.name(), "last"])
}

/// Claims a tick for this replica; false when another replica holds it
/// (firing it now, or done).
pub async fn claim(kv: &Kv, task: Task, tick: u64) -> redis::RedisResult<bool> {
    kv.set_new(&tick_key(kv, task, tick), "pending", PENDING)
        .await
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
    let id = match enqueue_tick(client, task, tick).await {
        Ok(id) => id,
        Err(e) => {
            // Unclaimed again: the next tick's catch-up fires it.
            if let Err(undo) = RELEASE_TICK
                .key(tick_key(kv, task, tick))
                .invoke_async::<i64>(&mut kv.conn())
                .await
            {
                tracing::warn!(schedule = task.name(), tick, error = %undo, "claim of a tick not enqueued was not given back; it expires");
            }
            return Err(e);
        }
    };
    SETTLE_TICK
        .key(tick_key(kv, task, tick))
        .key(last_key(kv, task))
        .arg(tick)
        .arg(&id)
        .arg(KEEP_SECS)
        .invoke_async::<i64>(&mut kv.conn())
        .await?;
    tracing::info!(schedule = task.name(), tick, job_id = %id, "scheduled job enqueued");
    Ok(Some(id))
}

/// Fires the latest tick of `schedule` before `before` that nobody fired
/// since the schedule's `last` one (no scheduler ran then, or the replica
/// that claimed it died before enqueueing), once. The first run of a
/// schedule only records where it starts: a fresh install does not fire
/// what was "missed" before it existed.
pub async fn catch_up(
    client: &JobClient,
    kv: &Kv,
    schedule: &Schedule,
    before: DateTime<Utc>,
) -> Result<Option<String>, BoxDynError> {
    let task = schedule.task;
    let mut conn = kv.conn();
    let last: Option<i64> = redis::cmd("GET")
        .arg(last_key(kv, task))
        .query_async(&mut conn)
        .await?;
    let Some(last) = last.and_then(|t| DateTime::from_timestamp(t, 0)) else {
        redis::cmd("SET")
            .arg(last_key(kv, task))
            .arg(before.timestamp())
            .arg("NX")
            .query_async::<()>(&mut conn)
            .await?;
        return Ok(None);
    };
    let from = last.max(before - LOOK_BACK);
    let Some(missed) = schedule
        .cron
        .after(&from)
        .take_while(|t| *t < before)
        .last()
    else {
        return Ok(None);
    };
    let tick = u64::try_from(missed.timestamp()).unwrap_or(0);
    let fired = fire(client, kv, task, tick).await?;
    if let Some(id) = &fired {
        tracing::warn!(schedule = task.name(), tick, job_id = %id, "missed tick caught up");
    }
    Ok(fired)
}

/// The job of one tick.
async fn enqueue_tick(client: &JobClient, task: Task, tick: u64) -> Result<String, BoxDynError> {
    let at: DateTime<Utc> =
        DateTime::from_timestamp(i64::try_from(tick).unwrap_or(0), 0).unwrap_or_else(Utc::now);
    match task {
        Task::Sweep => {
            enqueue(
                client,
                Sweep {
                    tick: at.to_rfc3339(),
                },
            )
            .await
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
            .await
        }
        Task::Backup => {
            let backup_id = aigentable_platform::ids::new_id();
            enqueue(client, RunBackup { backup_id }).await
        }
    }
}

async fn on_tick(tick: Tick, entry: Data<Entry>) -> Result<(), BoxDynError> {
    let task = entry.schedule.task;
    let count = |label: &str| {
        entry
            .metrics
            .ticks
            .with_label_values(&[task.name(), label])
            .inc();
    };
    let at = DateTime::from_timestamp(i64::try_from(tick.get_timestamp()).unwrap_or(0), 0)
        .unwrap_or_else(Utc::now);
    match catch_up(&entry.client, &entry.kv, &entry.schedule, at).await {
        Ok(Some(_)) => count("caught_up"),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(schedule = task.name(), error = %e, "missed ticks could not be checked");
        }
    }
    let outcome = fire(&entry.client, &entry.kv, task, tick.get_timestamp()).await;
    count(match &outcome {
        Ok(Some(_)) => "enqueued",
        Ok(None) => "claimed_elsewhere",
        Err(e) => {
            tracing::error!(schedule = task.name(), tick = tick.get_timestamp(), error = %e, "scheduled job could not be enqueued");
            "failed"
        }
    });
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
        // A tick missed while no scheduler ran is fired now, once.
        if let Err(e) = catch_up(&client, &platform.kv, &schedule, Utc::now()).await {
            tracing::warn!(schedule = schedule.task.name(), error = %e, "missed ticks could not be checked");
        }
        let name = schedule.task.name();
        let cron = schedule.cron.clone();
        tracing::info!(schedule = name, cron = %schedule.cron, "schedule registered");
        let entry = Entry {
            schedule,
            client: client.clone(),
            kv: platform.kv.clone(),
            metrics: metrics.clone(),
        };
        monitor = monitor.register(move |restarts| {
            if restarts > 0 {
                entry.metrics.restarts.inc();
            }
            WorkerBuilder::new(format!("cron-{name}-{}-{restarts}", std::process::id()))
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
