//! Original uploaded files in MongoDB GridFS, so that an api and workers on
//! different machines share them. Files are reached only through their
//! tenant-scoped document record.

use bson::{doc, oid::ObjectId};
use futures::{AsyncReadExt, AsyncWriteExt};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::GridFsBucketOptions;

use crate::db::{Db, DbError};
use crate::ids::TenantId;
use crate::model::document::FILES_BUCKET;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("stored file id is malformed")]
    BadId,
    #[error("stored file could not be read or written: {0}")]
    Io(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

fn bucket(db: &Db) -> GridFsBucket {
    db.database().gridfs_bucket(
        GridFsBucketOptions::builder()
            .bucket_name(FILES_BUCKET.to_owned())
            .build(),
    )
}

/// Stores `bytes` and returns the file id (hex).
pub async fn store(
    db: &Db,
    tenant: &TenantId,
    name: &str,
    bytes: &[u8],
) -> Result<String, FileError> {
    let mut upload = bucket(db)
        .open_upload_stream(name)
        .metadata(doc! { "tenantId": tenant.as_str() })
        .await
        .map_err(|e| FileError::Io(e.to_string()))?;
    upload
        .write_all(bytes)
        .await
        .map_err(|e| FileError::Io(e.to_string()))?;
    upload
        .close()
        .await
        .map_err(|e| FileError::Io(e.to_string()))?;
    match upload.id() {
        bson::Bson::ObjectId(id) => Ok(id.to_hex()),
        other => Ok(other.to_string()),
    }
}

pub async fn load(db: &Db, file_id: &str) -> Result<Vec<u8>, FileError> {
    let id = ObjectId::parse_str(file_id).map_err(|_| FileError::BadId)?;
    let mut download = bucket(db)
        .open_download_stream(bson::Bson::ObjectId(id))
        .await
        .map_err(|e| FileError::Io(e.to_string()))?;
    let mut buf = Vec::new();
    download
        .read_to_end(&mut buf)
        .await
        .map_err(|e| FileError::Io(e.to_string()))?;
    Ok(buf)
}

/// Deletes a stored file; deleting one that is already gone succeeds.
pub async fn remove(db: &Db, file_id: &str) -> Result<(), FileError> {
    let id = ObjectId::parse_str(file_id).map_err(|_| FileError::BadId)?;
    match bucket(db).delete(bson::Bson::ObjectId(id)).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::GridFs(_)) => Ok(()),
        Err(e) => Err(FileError::Io(e.to_string())),
    }
}
