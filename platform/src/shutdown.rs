//! The signal every process stops on.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, which is what process managers
/// (systemd, Kubernetes, `deploy/dev.sh`) send.
pub async fn signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
