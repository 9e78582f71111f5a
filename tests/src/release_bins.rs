//! The platform's release binaries for the benchmarks that run them as
//! processes.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The release binary `name` (`api`, `workers`, `scheduler`), or the one
/// the environment variable `override_var` names (a quick check of a
/// bench itself; the README's figures come from the release build).
///
/// Builds every binary of the workspace first, so that the figures are
/// those of the current code; one build for all of them keeps the
/// dependencies' features the same for every bench (building one package
/// alone resolves other features and rebuilds the dependencies).
pub async fn release_binary(name: &str, override_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(given) = std::env::var(override_var) {
        let bin = PathBuf::from(given);
        if !bin.is_file() {
            bail!("{override_var}: {} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = tokio::process::Command::new(cargo)
        .args(["build", "--release", "--workspace", "--bins"])
        .status()
        .await
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the release binaries failed (or set {override_var})");
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench binary has no directory")?
        .join(name);
    if !bin.is_file() {
        bail!("{} not found after building", bin.display());
    }
    Ok(bin)
}
