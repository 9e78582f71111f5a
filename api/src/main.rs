//! `api`: serves the HTTP api. `api create-super-admin <email>` creates a
//! platform administrator (password read from `SUPER_ADMIN_PASSWORD` or stdin).
//! `api restore-backup <id> [--dry-run]` restores a backup from `DATA_DIR`
//! in this process (for an operator whose api is down; the running platform
//! restores through `POST /system/backups/:id/restore`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aigentable_api::cli::run(std::env::args().skip(1).collect()).await
}
