//! `scheduler`: enqueues the cron jobs (sweep every minute, hourly analytics
//! rollup, daily backup). Run as many replicas as you like.
//!
//! The whole of the binary: its `main` only calls [`run`] with the command
//! line, so a test can start the same process from its own binary.

use anyhow::Context;

use crate::{SchedulerMetrics, schedules_from};
use aigentable_platform::{Config, Platform, metrics_server, telemetry};

pub async fn run(_args: Vec<String>) -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
    aigentable_allocator::return_large_blocks();
    let schedules = schedules_from(&|name| std::env::var(name).ok())?;
    let platform = Platform::connect(config)
        .await
        .context("connecting to services")?;
    tracing::info!(namespace = %platform.config.redis_namespace, schedules = schedules.len(), "scheduler started");
    let metrics = SchedulerMetrics::new()?;
    let port: u16 = match std::env::var("SCHEDULER_METRICS_PORT") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .context("SCHEDULER_METRICS_PORT must be a port number")?,
        _ => 9102,
    };
    if let Some(listener) = metrics_server::bind(&platform.config.host, port)
        .await
        .with_context(|| format!("binding SCHEDULER_METRICS_PORT {port}"))?
    {
        tokio::spawn(metrics_server::serve_with_token(
            listener,
            metrics.registry.clone(),
            platform.config.metrics_token.clone(),
        ));
    }
    crate::run(
        platform,
        schedules,
        metrics,
        aigentable_platform::shutdown::signal(),
    )
    .await?;
    tracing::info!("scheduler stopped");
    Ok(())
}
