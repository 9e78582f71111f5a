//! Original uploaded files in MongoDB GridFS, so that an api and workers on
//! different machines share them. Files are reached only through their
//! tenant-scoped document record.

use bson::{doc, oid::ObjectId};
use futures::{AsyncReadExt, AsyncWriteExt};
use mongodb::gridfs::{GridFsBucket, GridFsUploadStream};
use mongodb::options::GridFsBucketOptions;
use sha2::{Digest, Sha256};

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
    let mut upload = Upload::begin(db, tenant, name).await?;
    upload.write(bytes).await?;
    Ok(upload.finish().await?.id)
}

/// A file written to GridFS chunk by chunk as it arrives, so no one holds it
/// whole in memory. Until [`Upload::finish`] it is invisible (GridFS writes
/// the file record last); dropped unfinished (an error, a cancelled
/// request), the driver deletes the chunks already written in the
/// background, and [`Upload::abort`] deletes them at once.
pub struct Upload {
    stream: GridFsUploadStream,
    size: u64,
    sha256: Sha256,
}

/// A finished [`Upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The GridFS file id (hex).
    pub id: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

impl Upload {
    pub async fn begin(db: &Db, tenant: &TenantId, name: &str) -> Result<Self, FileError> {
        let stream = bucket(db)
            .open_upload_stream(name)
            .metadata(doc! { "tenantId": tenant.as_str() })
            .await
            .map_err(|e| FileError::Io(e.to_string()))?;
        Ok(Self {
            stream,
            size: 0,
            sha256: Sha256::new(),
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FileError> {
        self.stream
            .write_all(chunk)
            .await
            .map_err(|e| FileError::Io(e.to_string()))?;
        self.size += chunk.len() as u64;
        self.sha256.update(chunk);
        Ok(())
    }

    /// Deletes what was written, now rather than in the background.
    pub async fn abort(mut self) {
        if let Err(e) = self.stream.abort().await {
            tracing::warn!(error = %e, "could not delete the chunks of an aborted upload");
        }
    }

    pub async fn finish(mut self) -> Result<StoredFile, FileError> {
        self.stream
            .close()
            .await
            .map_err(|e| FileError::Io(e.to_string()))?;
        let id = match self.stream.id() {
            bson::Bson::ObjectId(id) => id.to_hex(),
            other => other.to_string(),
        };
        Ok(StoredFile {
            id,
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
        })
    }
}

/// Finished files that no record points to yet. Files still held when this
/// is dropped (the request failed or was cancelled half-way) are deleted in
/// the background; [`Unclaimed::discard`] deletes them at once. Nothing an
/// interrupted upload wrote stays behind.
pub struct Unclaimed {
    db: Db,
    ids: Vec<String>,
}

impl Unclaimed {
    pub fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            ids: Vec::new(),
        }
    }

    pub fn hold(&mut self, id: &str) {
        self.ids.push(id.to_owned());
    }

    /// A record now points to `id`: it is no longer deleted on drop.
    pub fn claim(&mut self, id: &str) {
        self.ids.retain(|held| held != id);
    }

    pub async fn discard(mut self) {
        for id in std::mem::take(&mut self.ids) {
            if let Err(e) = remove(&self.db, &id).await {
                tracing::warn!(file_id = %id, error = %e, "could not delete an unclaimed upload");
            }
        }
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        if ids.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                files = ids.len(),
                "unclaimed uploads left behind: no runtime to delete them"
            );
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            for id in ids {
                if let Err(e) = remove(&db, &id).await {
                    tracing::warn!(file_id = %id, error = %e, "could not delete an unclaimed upload");
                }
            }
        });
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
