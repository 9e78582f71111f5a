//! `run_backup`: every collection dumped under `DATA_DIR/backups/<id>/`
//! with its checksums (`platform::backups`), and the `backups` record saying
//! where, how big and whether it completed.

use bson::{Document, doc};
use serde_json::{Value, json};

use aigentable_jobs::types::RunBackup;
use aigentable_platform::backups::{self, BACKUPS};

use crate::runner::{Handle, JobContext, JobError};

impl Handle for RunBackup {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let result = dump(&self.backup_id, &ctx).await;
        if let Err(e) = &result {
            // The record must not stay RUNNING when an attempt gives up.
            let _ = ctx
                .state
                .platform
                .db
                .database()
                .collection::<Document>(BACKUPS)
                .update_one(
                    doc! { "_id": &self.backup_id },
                    doc! { "$set": { "status": "FAILED", "error": e.to_string(), "updatedAt": bson::DateTime::now() } },
                )
                .await;
        }
        result
    }
}

async fn dump(backup_id: &str, ctx: &JobContext) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let dir = backups::dir(&platform.config.data_dir, backup_id).map_err(JobError::permanent)?;
    let records = platform.db.database().collection::<Document>(BACKUPS);
    records
        .update_one(
            doc! { "_id": backup_id },
            doc! {
                "$set": { "status": "RUNNING", "path": dir.to_string_lossy().as_ref(), "updatedAt": bson::DateTime::now() },
                "$setOnInsert": { "createdAt": bson::DateTime::now() },
            },
        )
        .upsert(true)
        .await
        .map_err(JobError::transient)?;
    let manifest = backups::dump(&platform.db, &dir)
        .await
        .map_err(JobError::transient)?;
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let (collections, documents, bytes) = (
        manifest.collections.len() as u64,
        manifest.documents(),
        manifest.bytes(),
    );
    records
        .update_one(
            doc! { "_id": backup_id },
            doc! { "$set": {
                "status": "COMPLETED",
                "collections": to_i64(collections),
                "documents": to_i64(documents),
                "sizeBytes": to_i64(bytes),
                "completedAt": bson::DateTime::now(),
                "updatedAt": bson::DateTime::now(),
            } },
        )
        .await
        .map_err(JobError::transient)?;
    tracing::info!(job_id = %ctx.job_id, backup_id, documents, bytes, "backup completed");
    Ok(
        json!({ "backupId": backup_id, "collections": collections, "documents": documents, "sizeBytes": bytes }),
    )
}
