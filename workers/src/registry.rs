//! The one registration list: which job types run on which queues.

use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::ConnectionManager;

use aigentable_jobs::client::storage_for;
use aigentable_jobs::types::{self, SendEmail};

use crate::WorkerState;
use crate::runner::{Handle, run_job};

/// How often an idle worker looks for due jobs. apalis-redis would otherwise
/// wait for its 30 s heartbeat.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn unique_name(job: &str, restarts: usize) -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".to_owned());
    // A fresh suffix per start: apalis-redis refuses a name seen recently.
    let nonce = ulid::Ulid::generate().to_string();
    format!(
        "{host}-{}-{job}-{restarts}-{}",
        std::process::id(),
        &nonce[nonce.len() - 6..]
    )
}

fn register<J: Handle>(
    monitor: Monitor,
    state: &WorkerState,
    conn: &ConnectionManager,
    concurrency: usize,
) -> Monitor {
    let storage = storage_for::<J>(conn.clone(), &state.platform.config.redis_namespace);
    let state = state.clone();
    monitor.register(move |restarts| {
        WorkerBuilder::new(unique_name(J::NAME, restarts))
            .backend(storage.clone().poll_with_interval(POLL_INTERVAL))
            .concurrency(concurrency)
            .data(state.clone())
            .build(run_job::<J>)
    })
}

/// Runs workers for `queues` (all when empty) until `shutdown` resolves,
/// then lets running jobs finish for up to `grace`.
pub async fn run(
    state: WorkerState,
    queues: &[String],
    concurrency: usize,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let conn = apalis_redis::connect(state.platform.config.redis_url.expose().as_str()).await?;
    let wants = |queue: &str| queues.is_empty() || queues.iter().any(|q| q == queue);
    for q in queues {
        if !types::ALL_QUEUES.contains(&q.as_str()) {
            anyhow::bail!(
                "unknown queue '{q}'; known queues: {}",
                types::ALL_QUEUES.join(",")
            );
        }
    }
    let mut monitor = Monitor::new();
    if wants(types::send_email::QUEUE) {
        monitor = register::<SendEmail>(monitor, &state, &conn, concurrency);
    }
    monitor
        .should_restart(|_ctx, err| {
            tracing::error!(error = %err, "worker stopped, restarting");
            true
        })
        .shutdown_timeout(grace)
        .run_with_signal(shutdown)
        .await?;
    Ok(())
}
