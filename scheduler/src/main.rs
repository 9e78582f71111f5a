//! `scheduler`: enqueues the cron jobs (sweep every minute, hourly analytics
//! rollup, daily backup). Run as many replicas as you like.

use anyhow::Context;

use aigentable_platform::{Config, Platform, telemetry};
use aigentable_scheduler::{run, schedules_from};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
    let schedules = schedules_from(&|name| std::env::var(name).ok())?;
    let platform = Platform::connect(config)
        .await
        .context("connecting to services")?;
    tracing::info!(namespace = %platform.config.redis_namespace, schedules = schedules.len(), "scheduler started");
    run(platform, schedules, shutdown_signal()).await?;
    tracing::info!("scheduler stopped");
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
