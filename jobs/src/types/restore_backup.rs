use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Replaces the database's collections with a backup's (after checking the
/// backup against its checksums); with `dry_run`, only counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreBackup {
    pub backup_id: String,
    #[serde(default)]
    pub dry_run: bool,
}

impl Job for RestoreBackup {
    const NAME: &'static str = "restore_backup";
    const QUEUE: Queue = Queue::Maintenance;
    /// A restore half done is not retried blindly: an operator looks first.
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(3600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("restore:{}:{}", self.backup_id, self.dry_run))
    }
}
