//! `workers [--queues emails,...] [--concurrency N] [--metrics-port N]`:
//! runs background jobs. Prometheus metrics at `GET /metrics` on
//! `--metrics-port` or `WORKER_METRICS_PORT` (default 9101, 0 disables).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aigentable_workers::cli::run(std::env::args().skip(1).collect()).await
}
