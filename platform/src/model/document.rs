use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const COLLECTION: &str = "documents";

/// `UPLOADED → QUEUED → PARSING → CHUNKING → EMBEDDING → INDEXING → READY`,
/// or `FAILED` with a readable error; `DELETING` while its data is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentStatus {
    Uploaded,
    Queued,
    Parsing,
    Chunking,
    Embedding,
    Indexing,
    Ready,
    Failed,
    Deleting,
}

impl DocumentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Uploaded => "UPLOADED",
            DocumentStatus::Queued => "QUEUED",
            DocumentStatus::Parsing => "PARSING",
            DocumentStatus::Chunking => "CHUNKING",
            DocumentStatus::Embedding => "EMBEDDING",
            DocumentStatus::Indexing => "INDEXING",
            DocumentStatus::Ready => "READY",
            DocumentStatus::Failed => "FAILED",
            DocumentStatus::Deleting => "DELETING",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeDocument {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The uploaded file name.
    pub name: String,
    /// `pdf`, `docx`, `txt`, `md`, `csv`, `xlsx`, `xls` or `ods`.
    pub kind: String,
    pub mime_type: String,
    pub size: i64,
    #[serde(default)]
    pub category: Option<String>,
    pub status: DocumentStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub pages: Option<u32>,
    #[serde(default)]
    pub sheets: Option<u32>,
    #[serde(default)]
    pub chunk_count: u32,
    #[serde(default)]
    pub chunks_done: u32,
    #[serde(default)]
    pub progress: u8,
    /// GridFS id of the original file (hex ObjectId).
    pub file_id: String,
    pub sha256: String,
    #[serde(default)]
    pub job_id: Option<String>,
    pub uploaded_by: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub processed_at: Option<DateTime<Utc>>,
}

impl TenantOwned for KnowledgeDocument {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// GridFS bucket holding the original files.
pub const FILES_BUCKET: &str = "document_files";

impl KnowledgeDocument {
    /// The `document-updated` event payload: the same fields as the api's
    /// document view.
    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "mimeType": self.mime_type,
            "size": self.size,
            "agentId": self.agent_id,
            "category": self.category,
            "status": self.status.as_str(),
            "error": self.error,
            "pages": self.pages,
            "sheets": self.sheets,
            "chunkCount": self.chunk_count,
            "chunksDone": self.chunks_done,
            "progress": self.progress,
            "jobId": self.job_id,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "processedAt": self.processed_at,
        })
    }
}
