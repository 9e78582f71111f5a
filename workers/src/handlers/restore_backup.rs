//! `restore_backup`: a backup checked against its checksums, then written
//! back collection by collection (`platform::backups::restore`); a dry run
//! only counts.

use serde_json::Value;

use aigentable_jobs::types::RestoreBackup;
use aigentable_platform::backups::{self, BackupError};

use crate::runner::{Handle, JobContext, JobError};

impl Handle for RestoreBackup {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let dir = backups::dir(&platform.config.data_dir, &self.backup_id)
            .map_err(JobError::permanent)?;
        let report = backups::restore(&platform.db, &dir, &self.backup_id, self.dry_run)
            .await
            .map_err(|e| match e {
                BackupError::Db(_) | BackupError::Io(_) => JobError::transient(e),
                _ => JobError::permanent(e),
            })?;
        if !self.dry_run {
            aigentable_platform::channels::routes::announce_all_changed(&platform.kv).await;
            aigentable_platform::live_config::announce_all_changed(&platform.kv).await;
        }
        tracing::warn!(
            job_id = %ctx.job_id,
            backup_id = %self.backup_id,
            dry_run = self.dry_run,
            collections = report.collections.len(),
            "backup restored"
        );
        serde_json::to_value(&report).map_err(JobError::permanent)
    }
}
