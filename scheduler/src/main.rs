//! `scheduler`: enqueues the cron jobs (sweep every minute, hourly analytics
//! rollup, daily backup). Run as many replicas as you like.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aigentable_scheduler::cli::run(std::env::args().skip(1).collect()).await
}
