//! `scheduler`: connects and waits for signals. The cron schedules
//! (rollups, backups, sweeps) are enqueued from here once the job pipeline
//! defines them; until then it only proves its connections.

use anyhow::Context;

use aigentable_platform::{Config, Platform, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
    let platform = Platform::connect(config)
        .await
        .context("connecting to services")?;
    tracing::info!(namespace = %platform.config.redis_namespace, "scheduler started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("scheduler stopped");
    Ok(())
}
