//! Chaos benchmark of the job queue (issue 16), against the real `workers`
//! and `scheduler` binaries, a Redis (AOF, fsync always) and a
//! MongoDB-wire server of its own:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin chaos_bench -- [--jobs 100000] [--workers 2] [--work-ms 5] [--every-secs 5]
//! ```
//!
//! It accepts `--jobs` recorded jobs (`chaos_probe`: a MongoDB record each,
//! like a user's job) through the job client while, every `--every-secs`,
//! one fault in turn is injected: a workers process SIGKILLed (and started
//! again), Redis killed and restarted from its AOF, a workers process
//! stopped with SIGTERM (it drains; started again), MongoDB restarted.
//! Then it waits for every record to reach an outcome and counts, against
//! what was accepted:
//! - lost: accepted, never finished, record not left open either;
//! - stranded: records still QUEUED or RUNNING at the end;
//! - duplicated: jobs finished twice when no crash explains it (two runs
//!   at once, or a run after the job's success was recorded);
//! - re-runs after a crash: a run finished, then its own process was
//!   SIGKILLed before the outcome was written, so the job ran again
//!   (at-least-once: every handler of the platform is idempotent for this
//!   reason).
//!
//! It fails when a process it started dies unasked or never ran a job,
//! and prints every figure with the machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bson::doc;
use futures::{StreamExt, TryStreamExt};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use aigentable_jobs::types::ChaosProbe;
use aigentable_jobs::{Job, JobClient, Requester};
use aigentable_platform::Platform;
use aigentable_platform::ids::TenantId;
use aigentable_tests::config_from;
use aigentable_tests::release_bins::release_binary;
use aigentable_tests::services::{OwnMongo, OwnRedis, free_port};

struct Args {
    jobs: u64,
    workers: usize,
    work_ms: u64,
    every: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        jobs: 100_000,
        workers: 2,
        work_ms: 5,
        every: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v: u64 = it
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse()
            .with_context(|| format!("{a} must be a number"))?;
        match a.as_str() {
            "--jobs" => args.jobs = v.max(1),
            "--workers" => args.workers = usize::try_from(v)?.max(2),
            "--work-ms" => args.work_ms = v,
            "--every-secs" => args.every = Duration::from_secs(v.max(1)),
            other => bail!(
                "unknown argument {other}; usage: chaos_bench [--jobs N] [--workers N] [--work-ms N] [--every-secs N]"
            ),
        }
    }
    Ok(args)
}

/// A process this bench started, and whether it is meant to be running.
struct Proc {
    child: Child,
    metrics_port: u16,
}

struct Rig {
    env: HashMap<String, String>,
    workers_bin: PathBuf,
    scheduler_bin: PathBuf,
    workers: Vec<Proc>,
    scheduler: Option<Proc>,
    /// Successes reported by workers processes that are gone.
    ran_by_gone: u64,
    /// Which workers process was SIGKILLed (its pid), and when.
    kills: Vec<(i64, chrono::DateTime<chrono::Utc>)>,
}

impl Rig {
    /// A process of `bin`; its log (warnings and errors) goes to
    /// `CHAOS_LOG_DIR` when set.
    fn command(&self, bin: &PathBuf, metrics_var: &str, port: u16) -> anyhow::Result<Command> {
        let mut c = Command::new(bin);
        c.envs(&self.env)
            .env(metrics_var, port.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Ok(dir) = std::env::var("CHAOS_LOG_DIR") {
            c.env(
                "RUST_LOG",
                std::env::var("CHAOS_LOG").unwrap_or_else(|_| "warn".to_owned()),
            );
            let name = bin
                .file_name()
                .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
            let log = std::fs::File::create(PathBuf::from(dir).join(format!("{name}-{port}.log")))?;
            c.stdout(log.try_clone()?).stderr(log);
        }
        Ok(c)
    }

    fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let port = free_port();
        let child = self
            .command(&self.workers_bin, "WORKER_METRICS_PORT", port)?
            .args(["--queues", "bench,maintenance"])
            .spawn()
            .context("starting the workers binary")?;
        self.workers.push(Proc {
            child,
            metrics_port: port,
        });
        Ok(())
    }

    fn spawn_scheduler(&mut self) -> anyhow::Result<()> {
        let port = free_port();
        let child = self
            .command(&self.scheduler_bin, "SCHEDULER_METRICS_PORT", port)?
            .spawn()
            .context("starting the scheduler binary")?;
        self.scheduler = Some(Proc {
            child,
            metrics_port: port,
        });
        Ok(())
    }

    /// Fails when a process exited without being asked to.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        for (i, p) in self.workers.iter_mut().enumerate() {
            if let Some(status) = p.child.try_wait()? {
                bail!("workers process {} exited unasked ({status})", i + 1);
            }
        }
        if let Some(p) = &mut self.scheduler
            && let Some(status) = p.child.try_wait()?
        {
            bail!("the scheduler exited unasked ({status})");
        }
        Ok(())
    }

    /// The workers process `i` is replaced after `signal`; SIGTERM waits
    /// for its drain.
    async fn replace_worker(&mut self, i: usize, signal: &str) -> anyhow::Result<()> {
        let mut gone = self.workers.remove(i);
        self.ran_by_gone += succeeded(gone.metrics_port).await.unwrap_or(0);
        if let Some(pid) = gone.child.id() {
            if signal == "-KILL" {
                self.kills.push((i64::from(pid), chrono::Utc::now()));
            }
            Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .await?;
        }
        if tokio::time::timeout(Duration::from_secs(60), gone.child.wait())
            .await
            .is_err()
        {
            bail!(
                "workers process on metrics port {} did not stop within 60 s of {signal}",
                gone.metrics_port
            );
        }
        self.spawn_worker()
    }
}

/// `jobs_total{outcome="succeeded"}` of the workers process on `port`.
async fn succeeded(port: u16) -> anyhow::Result<u64> {
    let body = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)?
        .text()
        .await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("aigentable_jobs_total") && l.contains("outcome=\"succeeded\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker,
    RestartRedis,
    StopWorker,
    RestartMongo,
}

const FAULTS: [Fault; 4] = [
    Fault::KillWorker,
    Fault::RestartRedis,
    Fault::StopWorker,
    Fault::RestartMongo,
];

async fn inject(
    fault: Fault,
    n: usize,
    rig: &Mutex<Rig>,
    redis: &Mutex<OwnRedis>,
    mongo: &Mutex<OwnMongo>,
) -> anyhow::Result<()> {
    match fault {
        Fault::KillWorker | Fault::StopWorker => {
            let mut rig = rig.lock().await;
            rig.ensure_running()?;
            let i = n % rig.workers.len();
            let signal = if matches!(fault, Fault::KillWorker) {
                "-KILL"
            } else {
                "-TERM"
            };
            rig.replace_worker(i, signal).await?;
        }
        Fault::RestartRedis => {
            let mut redis = redis.lock().await;
            redis.down();
            tokio::time::sleep(Duration::from_secs(2)).await;
            redis.up().await;
        }
        Fault::RestartMongo => {
            let mut mongo = mongo.lock().await;
            mongo.down();
            tokio::time::sleep(Duration::from_secs(1)).await;
            mongo.up().await;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let workers_bin = release_binary("workers", "BENCH_WORKERS_BIN").await?;
    let scheduler_bin = release_binary("scheduler", "BENCH_SCHEDULER_BIN").await?;
    let redis = Mutex::new(OwnRedis::start().await);
    let mongo = Mutex::new(OwnMongo::start().await);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let env: HashMap<String, String> = [
        ("MONGODB_URI", mongo.lock().await.uri()),
        ("MONGODB_DB", format!("chaos_{run}")),
        ("REDIS_URL", redis.lock().await.url()),
        ("REDIS_NAMESPACE", format!("chaos:{run}")),
        (
            "JWT_SECRET",
            "bench-secret-bench-secret-bench-secret-01".to_owned(),
        ),
        ("JWT_ISSUER", "aigentable-bench".to_owned()),
        ("JWT_AUDIENCE", "aigentable-bench-web".to_owned()),
        (
            "DATA_ENCRYPTION_KEY",
            "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=".to_owned(),
        ),
        ("HOST", "127.0.0.1".to_owned()),
        (
            "DATA_DIR",
            std::env::temp_dir()
                .join(format!("aigentable-chaos-{run}"))
                .to_string_lossy()
                .into_owned(),
        ),
        // Short leases, as the fault tests use: a killed process's jobs
        // are taken over within seconds.
        ("WORKER_LEASE_SECS", "3".to_owned()),
        ("SCHEDULE_SWEEP", "*/5 * * * * *".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let platform = Platform::connect(config_from(&env)).await?;
    aigentable_platform::bootstrap::ensure_indexes(&platform.db).await?;
    let client = JobClient::connect(&platform).await?;

    let mut rig = Rig {
        env,
        workers_bin,
        scheduler_bin,
        workers: Vec::new(),
        scheduler: None,
        ran_by_gone: 0,
        kills: Vec::new(),
    };
    for _ in 0..args.workers {
        rig.spawn_worker()?;
    }
    rig.spawn_scheduler()?;
    let rig = Arc::new(Mutex::new(rig));
    println!("machine: {}", aigentable_tests::machine());
    println!(
        "{} chaos_probe jobs ({} ms of work each), {} workers processes and a scheduler; a fault every {:?}",
        args.jobs, args.work_ms, args.workers, args.every
    );

    let tenant = TenantId::from_trusted("chaos".to_owned());
    let started = Instant::now();
    let enqueue_retries = Arc::new(AtomicU64::new(0));
    let accepting = {
        let (client, tenant, retries) = (client.clone(), tenant.clone(), enqueue_retries.clone());
        let (jobs, work_ms) = (args.jobs, args.work_ms);
        tokio::spawn(async move {
            futures::stream::iter(0..jobs)
                .map(|seq| {
                    let (client, tenant, retries) = (&client, &tenant, &retries);
                    async move {
                        // An outage answers an error; the same key finds
                        // the job an unanswered try may have made.
                        loop {
                            match client
                                .enqueue(tenant, Requester::System, ChaosProbe { seq, work_ms })
                                .await
                            {
                                Ok(record) => return record.id,
                                Err(_) => {
                                    retries.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        }
                    }
                })
                .buffer_unordered(32)
                .collect::<std::collections::HashSet<String>>()
                .await
        })
    };

    // Faults, one in turn, until every accepted job is settled.
    let mut faults: HashMap<&'static str, u32> = HashMap::new();
    let mut n = 0usize;
    let db = platform.db.clone();
    let open = || async {
        db.unscoped::<bson::Document>("jobs")
            .count_documents(doc! {
                "tenantId": "chaos",
                "status": { "$in": ["QUEUED", "RUNNING"] },
                "type": ChaosProbe::NAME,
            })
            .await
            .unwrap_or(u64::MAX)
    };
    let mut accepting = Some(accepting);
    let mut accepted = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_fault = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rig.lock().await.ensure_running()?;
        if accepting
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(handle) = accepting.take()
        {
            accepted = handle.await?;
            println!(
                "accepted {} jobs in {:.1} s ({} enqueue tries answered an error and were retried)",
                accepted.len(),
                started.elapsed().as_secs_f64(),
                enqueue_retries.load(Ordering::Relaxed)
            );
        }
        let still_open = open().await;
        if accepting.is_none() && still_open == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("jobs still open after 30 minutes: {still_open}");
        }
        if last_fault.elapsed() >= args.every {
            let fault = FAULTS[n % FAULTS.len()];
            inject(fault, n / FAULTS.len(), &rig, &redis, &mongo).await?;
            *faults.entry(fault_name(fault)).or_default() += 1;
            n += 1;
            last_fault = Instant::now();
        }
    }
    let elapsed = started.elapsed();

    let report = count(&platform, &accepted, &rig.lock().await.kills).await?;
    let mut rig = Arc::try_unwrap(rig)
        .map_err(|_| anyhow::anyhow!("the rig is still shared"))?
        .into_inner();
    rig.ensure_running()?;
    let mut ran = rig.ran_by_gone;
    for (i, p) in rig.workers.iter().enumerate() {
        let n = succeeded(p.metrics_port)
            .await
            .with_context(|| format!("workers process {} did not answer its metrics", i + 1))?;
        ran += n;
    }
    if ran == 0 {
        bail!("no workers process ran a job");
    }
    let mut faults: Vec<_> = faults.into_iter().collect();
    faults.sort();
    println!(
        "{} jobs settled in {:.1} s ({:.0} jobs/s) under {} faults: {faults:?}",
        accepted.len(),
        elapsed.as_secs_f64(),
        accepted.len() as f64 / elapsed.as_secs_f64(),
        n
    );
    println!(
        "lost {}, duplicated {}, stranded {}, failed {}; re-runs after a crash {}",
        report.lost, report.duplicated, report.stranded, report.failed, report.rerun_after_crash
    );
    let _ = db.database().drop().await;
    if report.lost + report.duplicated + report.stranded + report.failed > 0 {
        bail!("jobs were lost, duplicated, stranded or failed");
    }
    Ok(())
}

fn fault_name(f: Fault) -> &'static str {
    match f {
        Fault::KillWorker => "workers SIGKILL",
        Fault::RestartRedis => "redis restart",
        Fault::StopWorker => "workers SIGTERM",
        Fault::RestartMongo => "mongodb restart",
    }
}

#[derive(Debug, Default)]
struct Report {
    lost: u64,
    duplicated: u64,
    stranded: u64,
    failed: u64,
    rerun_after_crash: u64,
}

async fn count(
    platform: &Platform,
    accepted: &std::collections::HashSet<String>,
    kills: &[(i64, chrono::DateTime<chrono::Utc>)],
) -> anyhow::Result<Report> {
    let db = &platform.db;
    // Per job: each finished run's start, end and process.
    let mut runs: HashMap<String, Vec<(bson::DateTime, bson::DateTime, i64)>> = HashMap::new();
    let mut cursor = db
        .unscoped::<bson::Document>(ChaosProbe::RUNS)
        .find(doc! {})
        .await?;
    while let Some(run) = cursor.try_next().await? {
        let (Ok(id), Ok(from), Ok(to), Ok(pid)) = (
            run.get_str("jobId"),
            run.get_datetime("startedAt"),
            run.get_datetime("endedAt"),
            run.get_i64("pid"),
        ) else {
            continue;
        };
        runs.entry(id.to_owned())
            .or_default()
            .push((*from, *to, pid));
    }
    let mut status: HashMap<String, String> = HashMap::new();
    let mut cursor = db
        .unscoped::<bson::Document>("jobs")
        .find(doc! { "type": "chaos_probe" })
        .await?;
    while let Some(job) = cursor.try_next().await? {
        if let (Ok(id), Ok(s)) = (job.get_str("_id"), job.get_str("status")) {
            status.insert(id.to_owned(), s.to_owned());
        }
    }
    let mut report = Report::default();
    for id in accepted {
        let s = status.get(id).map_or("MISSING", String::as_str);
        match s {
            "QUEUED" | "RUNNING" => report.stranded += 1,
            "FAILED" | "DEAD" | "CANCELLED" => report.failed += 1,
            _ => {}
        }
        let mut finished = runs.get(id).cloned().unwrap_or_default();
        if finished.is_empty() && s != "QUEUED" && s != "RUNNING" {
            report.lost += 1;
        }
        finished.sort();
        for pair in finished.windows(2) {
            let [(_, first_end, first_pid), (second_start, _, _)] = pair else {
                continue;
            };
            // The process of the first run was killed after it and before
            // the next one began: its outcome may not have been written.
            let crashed_between = kills.iter().any(|(pid, at)| {
                let at = bson::DateTime::from_chrono(*at);
                pid == first_pid && *first_end <= at && at <= *second_start
            });
            if second_start < first_end || !crashed_between {
                report.duplicated += 1;
            } else {
                report.rerun_after_crash += 1;
            }
        }
    }
    Ok(report)
}
