//! `workers [--queues emails,...] [--concurrency N] [--metrics-port N]`:
//! runs background jobs. Prometheus metrics at `GET /metrics` on
//! `--metrics-port` or `WORKER_METRICS_PORT` (default 9101, 0 disables).
//!
//! The whole of the binary: its `main` only calls [`run`] with the command
//! line, so a test can start the same process from its own binary.

use std::time::Duration;

use anyhow::Context;

use crate::registry::{Concurrency, parse_queues};
use crate::{WorkerSetup, WorkerState, run_with};
use aigentable_jobs::Queue;
use aigentable_platform::{Config, Platform, bootstrap, metrics_server, telemetry};

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned))
        })
}

/// A number of seconds from the environment variable `name` (unset or
/// blank: `None`), within `range`.
fn env_number(name: &str, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<Option<u64>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .ok()
                .filter(|n| range.contains(n))
                .with_context(|| match (range.start(), range.end()) {
                    (0, &u64::MAX) => format!("{name} must be a number of seconds"),
                    (lo, hi) => format!("{name} must be a number of seconds from {lo} to {hi}"),
                })
        })
        .transpose()
}

pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
    aigentable_allocator::return_large_blocks();
    let queue_names: Vec<String> = arg_value(&args, "--queues")
        .or_else(|| std::env::var("WORKER_QUEUES").ok())
        .map(|v| {
            v.split(',')
                .map(|q| q.trim().to_owned())
                .filter(|q| !q.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let default_concurrency: Option<usize> = arg_value(&args, "--concurrency")
        .or_else(|| {
            std::env::var("WORKER_CONCURRENCY")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .context("--concurrency / WORKER_CONCURRENCY must be a positive number")
        })
        .transpose()?;
    let concurrency =
        Concurrency::from_lookup(default_concurrency, &|name| std::env::var(name).ok())?;
    let queues = parse_queues(&queue_names)?;
    let metrics_port: u16 = arg_value(&args, "--metrics-port")
        .or_else(|| std::env::var("WORKER_METRICS_PORT").ok())
        .map(|v| {
            v.trim()
                .parse()
                .context("--metrics-port / WORKER_METRICS_PORT must be a port number (0 disables)")
        })
        .transpose()?
        .unwrap_or(9101);
    let grace_secs: u64 = env_number("WORKER_SHUTDOWN_GRACE_SECS", 0..=u64::MAX)?.unwrap_or(30);
    let lease_secs: u64 = env_number("WORKER_LEASE_SECS", 2..=3600)?.unwrap_or(60);
    let stop_budget_secs: u64 = env_number("WORKER_STOP_BUDGET_SECS", 1..=3600)?.unwrap_or(10);
    let metrics_host = config.host.clone();
    let metrics_token = config.metrics_token.clone();
    let platform = Platform::connect(config)
        .await
        .context("connecting to services")?;
    bootstrap::ensure_indexes(&platform.db)
        .await
        .context("creating indexes")?;
    // Only the knowledge queues search or write vectors; a process serving
    // none of them never opens the store (the embedded one has one owner).
    let state = WorkerState::new(platform)?;
    let state = if Queue::needs_vectors_any(&queues) {
        state.with_vectors().await.with_context(|| {
            let knowledge = Queue::KNOWLEDGE.map(Queue::as_str).join(",");
            format!(
                "opening the vector store for the queues {knowledge}: with the embedded store, \
                 run them in one workers process only (--queues {knowledge}) and the others \
                 elsewhere, or set QDRANT_URL so that several processes share a Qdrant server"
            )
        })?
    } else {
        tracing::info!("no knowledge queue served: the vector store is not opened");
        state
    };
    let mut setup = WorkerSetup::connect(state, concurrency.clone())
        .await
        .context("connecting to the job queue")?;
    // Six renewals per lease: a few slow Redis answers never cost a lease.
    setup.queue.lease = Duration::from_secs(lease_secs);
    setup.queue.heartbeat = setup.queue.heartbeat.min(setup.queue.lease / 6);
    let listener = metrics_server::bind(&metrics_host, metrics_port)
        .await
        .with_context(|| format!("binding the metrics port {metrics_port}"))?;
    let ready = metrics_server::Readiness::default();
    let server = listener.map(|l| {
        tokio::spawn(metrics_server::serve_with_readiness(
            l,
            setup.metrics.registry.clone(),
            metrics_token,
            ready.clone(),
        ))
    });
    tracing::info!(?queues, ?concurrency, grace_secs, "workers starting");
    ready.set(true);
    // Not ready from the signal on: the drain that follows may take the
    // whole grace period, and nothing new should be counted on this process.
    let draining = ready.clone();
    let result = run_with(
        setup,
        &queues,
        Duration::from_secs(grace_secs),
        async move {
            let signalled = aigentable_platform::shutdown::signal().await;
            draining.set(false);
            tracing::info!("draining: readiness now fails");
            stop_by(Duration::from_secs(
                grace_secs.saturating_add(stop_budget_secs),
            ));
            signalled
        },
    )
    .await;
    if let Some(server) = server {
        server.abort();
    }
    result?;
    tracing::info!("workers stopped");
    Ok(())
}

/// Ends the process `after` the stop signal, whatever the drain is still
/// waiting for (a store that stopped answering, a blocking task the runtime
/// would wait for): an orchestrator's kill timeout or an operator must be
/// able to count on a bound. What the process still held is taken over when
/// its leases lapse, as after a crash. A thread of its own, so a wedged
/// runtime cannot hold it up.
fn stop_by(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".to_owned())
        .spawn(move || {
            std::thread::sleep(after);
            tracing::error!(
                after_secs = after.as_secs(),
                "the drain did not end in time; exiting, leases left are taken over when they lapse"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no stop deadline: its thread could not start");
    }
}
