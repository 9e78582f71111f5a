//! `api`: serves the HTTP api. `api create-super-admin <email>` creates a
//! platform administrator (password read from `SUPER_ADMIN_PASSWORD` or stdin).
//! `api restore-backup <id> [--dry-run]` restores a backup from `DATA_DIR`
//! in this process (for an operator whose api is down; the running platform
//! restores through `POST /system/backups/:id/restore`).
//!
//! The whole of the binary: its `main` only calls [`run`] with the command
//! line, so a test can start the same process from its own binary.

use std::io::BufRead;

use anyhow::Context;

use crate::{AppState, bind, serve};
use aigentable_platform::{Config, Platform, backups, bootstrap, telemetry};

pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
    aigentable_allocator::return_large_blocks();
    let platform = Platform::connect(config)
        .await
        .context("connecting to services")?;
    bootstrap::ensure_indexes(&platform.db)
        .await
        .context("creating indexes")?;

    match args.first().map(String::as_str) {
        Some("create-super-admin") => {
            let email = args
                .get(1)
                .context("usage: api create-super-admin <email>")?;
            let password = match std::env::var("SUPER_ADMIN_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    eprintln!("password (read from stdin):");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let admin = bootstrap::create_super_admin(&platform, email, &password).await?;
            println!("created SUPER_ADMIN {} ({})", admin.email, admin.id);
            Ok(())
        }
        Some("restore-backup") => {
            let id = args
                .get(1)
                .context("usage: api restore-backup <id> [--dry-run]")?;
            let dry_run = args.iter().any(|a| a == "--dry-run");
            let dir = backups::dir(&platform.config.data_dir, id)?;
            let report = backups::restore(&platform.db, &dir, id, dry_run).await?;
            for c in &report.collections {
                println!(
                    "{:<28} {:>10} in the backup {:>10} before",
                    c.name, c.documents, c.current
                );
            }
            println!(
                "{} backup {id}: {} collections{}",
                if dry_run { "checked" } else { "restored" },
                report.collections.len(),
                if report.kept.is_empty() {
                    String::new()
                } else {
                    format!(" (left alone: {})", report.kept.join(", "))
                }
            );
            Ok(())
        }
        Some(other) => {
            anyhow::bail!(
                "unknown command '{other}'; try: api, api create-super-admin <email>, api restore-backup <id> [--dry-run]"
            )
        }
        None => {
            raise_open_files_limit();
            bootstrap::seed_super_admin(&platform).await?;
            let (host, port) = (platform.config.host.clone(), platform.config.port);
            let listener = bind(&host, port)
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            tracing::info!(%host, port, "api listening");
            let state = AppState::new(platform).await?;
            serve(state, listener, async {
                let _ = aigentable_platform::shutdown::signal().await;
            })
            .await;
            tracing::info!("api stopped");
            Ok(())
        }
    }
}

/// Every socket is an open file: the usual soft limit of 1,024 would refuse
/// connections from about the thousandth browser on (measured by
/// socket_bench), so the soft limit is raised to the hard one.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "open files limit not raised"),
    }
}

#[cfg(test)]
mod tests {
    use rlimit::Resource;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = Resource::NOFILE.get().expect("limits readable");
        let low = hard.min(1024);
        Resource::NOFILE.set(low, hard).expect("soft limit lowered");
        super::raise_open_files_limit();
        let (soft, _) = Resource::NOFILE.get().expect("limits readable");
        assert_eq!(soft, hard);
    }
}
