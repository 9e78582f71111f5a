//! Queue benchmark against the real `workers` binary and the local Redis:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin bench -- [--jobs 100000] [--samples 200] [--concurrency 64]
//! ```
//!
//! 1. enqueue-to-start latency (p50/p99) of a job pushed to an idle queue,
//!    and while a steady stream of no-op jobs keeps the worker busy;
//! 2. time to drain a backlog of `--jobs` no-op jobs, hence no-op jobs per
//!    second, with one and with two worker processes (`workers --queues
//!    bench`, built in release mode first).
//!
//! Everything runs under a fresh Redis namespace and MongoDB database that
//! are removed at the end; only loopback services are used.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::process::{Child, Command};

use aigentable_jobs::queue::{self, QueueKeys};
use aigentable_jobs::types::Noop;
use aigentable_jobs::{Envelope, Job};
use aigentable_tests::release_bins::release_binary;
use aigentable_tests::{mongodb_uri, redis_url};
use aigentable_workers::handlers::noop::{PROBE_PREFIX, probe_channel};

struct Args {
    jobs: usize,
    samples: usize,
    concurrency: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        jobs: 100_000,
        samples: 200,
        // The workers' built-in default for the bench queue, so that the
        // figures describe the shipped configuration.
        concurrency: Noop::QUEUE.default_concurrency(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = |it: &mut dyn Iterator<Item = String>| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a} must be a number"))
        };
        match a.as_str() {
            "--jobs" => args.jobs = value(&mut it)?.max(1),
            "--samples" => args.samples = value(&mut it)?.max(1),
            "--concurrency" => args.concurrency = value(&mut it)?.max(1),
            other => bail!(
                "unknown argument {other}; usage: bench [--jobs N] [--samples N] [--concurrency N]"
            ),
        }
    }
    Ok(args)
}

struct Bench {
    namespace: String,
    database: String,
    keys: QueueKeys,
    conn: ConnectionManager,
    workers_bin: PathBuf,
    concurrency: usize,
}

impl Bench {
    fn spawn_worker(&self, metrics_port: u16) -> anyhow::Result<Child> {
        Command::new(&self.workers_bin)
            .args(["--queues", "bench", "--concurrency"])
            .arg(self.concurrency.to_string())
            .env("MONGODB_URI", mongodb_uri())
            .env("MONGODB_DB", &self.database)
            .env("REDIS_URL", redis_url())
            .env("REDIS_NAMESPACE", &self.namespace)
            .env("JWT_SECRET", "bench-secret-bench-secret-bench-secret-01")
            .env("JWT_ISSUER", "aigentable-bench")
            .env("JWT_AUDIENCE", "aigentable-bench-web")
            .env(
                "DATA_ENCRYPTION_KEY",
                "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=",
            )
            .env("HOST", "127.0.0.1")
            .env("WORKER_METRICS_PORT", metrics_port.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the workers binary")
    }

    async fn push(&self, jobs: &[(String, Envelope<Noop>)]) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        queue::push(&mut conn, &self.keys, jobs).await?;
        Ok(())
    }

    fn envelope(id: String, seq: u64) -> (String, Envelope<Noop>) {
        let envelope = Envelope {
            job_id: id.clone(),
            tenant_id: "bench".to_owned(),
            payload: Noop { seq },
        };
        (id, envelope)
    }

    /// Pushes probe jobs one at a time and times each until its handler
    /// reports its start. `load`: no-op jobs per second pushed meanwhile.
    async fn latency(&self, samples: usize, load: u64) -> anyhow::Result<Vec<Duration>> {
        let client = redis::Client::open(redis_url())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(probe_channel(&self.namespace)).await?;
        let mut started = pubsub.into_on_message();

        let loader = (load > 0).then(|| {
            let bench_conn = self.conn.clone();
            let keys = self.keys.clone();
            tokio::spawn(async move {
                // 100 batches a second; stopped by abort below.
                let per_tick = (load / 100).max(1);
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut seq = 0u64;
                loop {
                    tick.tick().await;
                    let jobs: Vec<_> = (0..per_tick)
                        .map(|_| {
                            seq += 1;
                            Bench::envelope(format!("load-{seq}"), seq)
                        })
                        .collect();
                    let mut conn = bench_conn.clone();
                    if let Err(e) = queue::push(&mut conn, &keys, &jobs).await {
                        eprintln!("load push failed: {e}");
                    }
                }
            })
        });
        if loader.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        let mut out = Vec::with_capacity(samples);
        for i in 0..samples {
            let id = format!("{PROBE_PREFIX}{load}-{i}");
            let t0 = Instant::now();
            self.push(&[Self::envelope(id.clone(), i as u64)]).await?;
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    msg = started.next() => {
                        let msg = msg.context("probe subscription closed")?;
                        if msg.get_payload::<String>().is_ok_and(|p| p == id) {
                            out.push(t0.elapsed());
                            break;
                        }
                    }
                    () = &mut deadline => bail!("probe {id} did not start within 10 s"),
                }
            }
            // Idle between samples: each probe finds the worker waiting.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(loader) = loader {
            loader.abort();
            self.wait_drained(Duration::from_secs(60)).await?;
        }
        Ok(out)
    }

    async fn wait_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut conn = self.conn.clone();
        while Instant::now() < deadline {
            let d = queue::depth(&mut conn, &self.keys).await?;
            if d.ready == 0 && d.inflight == 0 && d.delayed == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("the queue did not drain within {timeout:?}")
    }

    /// Waits until the worker processes answer a probe: they are started,
    /// subscribed and idle.
    async fn warm_up(&self) -> anyhow::Result<()> {
        self.latency(3, 0).await.map(|_| ())
    }

    /// Fills a backlog of `n` jobs with every worker process stopped, then
    /// starts `processes` workers and times the drain from the first job
    /// taken to the last one finished.
    async fn drain(&self, n: usize, processes: u16) -> anyhow::Result<(Duration, u64)> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let jobs: Vec<_> = chunk
                .iter()
                .map(|&i| Self::envelope(format!("drain-{processes}-{i}"), i as u64))
                .collect();
            self.push(&jobs).await?;
        }
        let mut conn = self.conn.clone();
        let full = queue::depth(&mut conn, &self.keys).await?.ready;
        let mut children = Vec::new();
        for p in 0..processes {
            children.push(self.spawn_worker(19_101 + p)?);
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut first_taken = None;
        let finished = loop {
            if Instant::now() > deadline {
                bail!("the backlog did not drain within 300 s");
            }
            ensure_running(&mut children)?;
            let d = queue::depth(&mut conn, &self.keys).await?;
            let now = Instant::now();
            if first_taken.is_none() && d.ready < full {
                first_taken = Some(now);
            }
            let left: u64 = redis::cmd("HLEN")
                .arg(&self.keys.data)
                .query_async(&mut conn)
                .await?;
            if left == 0 {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        ensure_running(&mut children)?;
        let per_process = self.scrape_succeeded(processes).await;
        for mut child in children {
            stop(&mut child).await;
        }
        let per_process = per_process?;
        // A process that ran nothing was not measured, whatever it says.
        if let Some(idle) = per_process.iter().position(|n| *n == 0) {
            bail!(
                "workers process {} ran no job: the figure would be for {} process(es), not {processes}",
                idle + 1,
                processes - 1
            );
        }
        let elapsed = finished - first_taken.unwrap_or(finished);
        Ok((elapsed, per_process.iter().sum()))
    }

    /// `jobs_total{outcome="succeeded"}` of each process, from its metrics;
    /// an error when one does not answer.
    async fn scrape_succeeded(&self, processes: u16) -> anyhow::Result<Vec<u64>> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for p in 0..processes {
            let url = format!("http://127.0.0.1:{}/metrics", 19_101 + p);
            let body = http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("workers process {} did not answer {url}", p + 1))?
                .text()
                .await?;
            out.push(
                body.lines()
                    .filter(|l| {
                        l.starts_with("aigentable_jobs_total")
                            && l.contains("outcome=\"succeeded\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>(),
            );
        }
        Ok(out)
    }

    async fn cleanup(&self) {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.namespace))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(100) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
        if let Ok(client) = mongodb::Client::with_uri_str(mongodb_uri()).await {
            let _ = client.database(&self.database).drop().await;
        }
    }
}

/// Fails when a workers process this bench started has exited: a figure
/// taken without it would not be what it says (one was, once: the second
/// process had stopped at start).
fn ensure_running(children: &mut [Child]) -> anyhow::Result<()> {
    for (i, child) in children.iter_mut().enumerate() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "workers process {} exited ({status}) during the measurement",
                i + 1
            );
        }
    }
    Ok(())
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SIGTERM: the graceful path, as in production.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report_latency(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&samples, 50.0).as_secs_f64() * 1000.0,
        percentile(&samples, 99.0).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        samples.len()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let workers_bin = release_binary("workers", "BENCH_WORKERS_BIN").await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let namespace = format!("bench:{run}");
    let bench = Bench {
        keys: QueueKeys::for_job::<Noop>(&namespace),
        namespace,
        database: format!("bench_{run}"),
        conn: queue::connect(&redis_url()).await?,
        workers_bin,
        concurrency: args.concurrency,
    };
    println!("machine: {}", aigentable_tests::machine());
    println!(
        "queue: {} ({}), worker concurrency {}",
        Noop::QUEUE,
        bench.keys.prefix,
        args.concurrency
    );
    let result = run_all(&bench, &args).await;
    bench.cleanup().await;
    result
}

async fn run_all(bench: &Bench, args: &Args) -> anyhow::Result<()> {
    let mut worker = bench.spawn_worker(19_100)?;
    let measured = async {
        bench.warm_up().await?;
        ensure_running(std::slice::from_mut(&mut worker))?;
        report_latency(
            "enqueue-to-start, idle queue",
            bench.latency(args.samples, 0).await?,
        );
        report_latency(
            "enqueue-to-start, under 5,000 no-op jobs/s",
            bench.latency(args.samples, 5_000).await?,
        );
        anyhow::Ok(())
    }
    .await;
    let still = ensure_running(std::slice::from_mut(&mut worker));
    stop(&mut worker).await;
    measured?;
    still?;

    for processes in [1u16, 2] {
        let (elapsed, succeeded) = bench.drain(args.jobs, processes).await?;
        let rate = args.jobs as f64 / elapsed.as_secs_f64();
        println!(
            "backlog of {} no-op jobs, {processes} worker process(es), each running to the end and each ran jobs: drained in {:.2} s = {:.0} jobs/s ({:.0} per process); {succeeded} succeeded per their metrics",
            args.jobs,
            elapsed.as_secs_f64(),
            rate,
            rate / f64::from(processes)
        );
        if succeeded != args.jobs as u64 {
            println!(
                "warning: metrics count {succeeded} successes for {} jobs",
                args.jobs
            );
        }
        let mut conn = bench.conn.clone();
        let d = queue::depth(&mut conn, &bench.keys).await?;
        if d != queue::Depth::default() {
            bail!("jobs left behind after the drain: {d:?}");
        }
    }
    Ok(())
}
