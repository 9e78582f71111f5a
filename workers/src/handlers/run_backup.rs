//! Backups: every collection dumped as relaxed extended JSON lines under
//! `DATA_DIR/backups/<backup id>/`, with a `backups` record saying where,
//! how big and whether it completed.

use std::path::PathBuf;

use bson::{Document, doc};
use futures::TryStreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use aigentable_jobs::types::RunBackup;

use crate::runner::{Handle, JobContext, JobError};

pub const BACKUPS: &str = "backups";

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
    if !aigentable_platform::ids::looks_like_id(backup_id) {
        return Err(JobError::permanent(format!(
            "backup id '{backup_id}' is malformed"
        )));
    }
    let dir = PathBuf::from(&platform.config.data_dir)
        .join("backups")
        .join(backup_id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(JobError::transient)?;
    let db = platform.db.database();
    let records = db.collection::<Document>(BACKUPS);
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

    let mut names = db
        .list_collection_names()
        .await
        .map_err(JobError::transient)?;
    // The outbox is a delivery log and, without SMTP, the developer's
    // mailbox holding rendered reset links: never part of a backup.
    names.retain(|n| n != crate::handlers::send_email::OUTBOX);
    names.sort();
    let (mut documents, mut bytes) = (0u64, 0u64);
    for name in &names {
        let file_path = dir.join(format!("{name}.jsonl"));
        let mut file = tokio::fs::File::create(&file_path)
            .await
            .map_err(JobError::transient)?;
        let mut cursor = db
            .collection::<Document>(name)
            .find(doc! {})
            .await
            .map_err(JobError::transient)?;
        while let Some(d) = cursor.try_next().await.map_err(JobError::transient)? {
            let mut line = bson::Bson::Document(d).into_relaxed_extjson().to_string();
            line.push('\n');
            file.write_all(line.as_bytes())
                .await
                .map_err(JobError::transient)?;
            documents += 1;
            bytes += line.len() as u64;
        }
        file.flush().await.map_err(JobError::transient)?;
    }
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    records
        .update_one(
            doc! { "_id": backup_id },
            doc! { "$set": {
                "status": "COMPLETED",
                "collections": to_i64(names.len() as u64),
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
        json!({ "backupId": backup_id, "collections": names.len(), "documents": documents, "sizeBytes": bytes }),
    )
}
