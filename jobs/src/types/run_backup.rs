use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Dumps the tenant's (or the platform's) data to a backup archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunBackup {
    /// Backup record to fill.
    pub backup_id: String,
}

impl Job for RunBackup {
    const NAME: &'static str = "run_backup";
    const QUEUE: Queue = Queue::Maintenance;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(3600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("backup:{}", self.backup_id))
    }
}
