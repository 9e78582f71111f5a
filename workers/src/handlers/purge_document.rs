//! `purge_document`: removes a deleted document's vectors (from every
//! collection the tenant searches or is filling), its file and its record.

use serde_json::{Value, json};

use aigentable_jobs::types::PurgeDocument;
use aigentable_platform::files;
use aigentable_platform::model::KnowledgeDocument;

use super::knowledge::{store, tenant_index};
use crate::runner::{Handle, JobContext, JobError};

impl Handle for PurgeDocument {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let db = &ctx.state.platform.db;
        let documents = db.scoped::<KnowledgeDocument>(&ctx.tenant_id);
        let Some(document) = documents
            .find_by_id(&self.document_id)
            .await
            .map_err(JobError::transient)?
        else {
            return Ok(json!({ "purged": false, "reason": "already gone" }));
        };
        let store = store(&ctx.state)?;
        let (active, target) = tenant_index(&ctx.state, &ctx.tenant_id).await?;
        for m in std::iter::once(active).chain(target) {
            match store
                .delete_document(&m.collection, ctx.tenant_id.as_str(), &document.id)
                .await
            {
                Ok(()) | Err(aigentable_vectors::VectorError::CollectionNotFound(_)) => {}
                Err(e) => return Err(JobError::transient(e)),
            }
        }
        files::remove(db, &document.file_id)
            .await
            .map_err(JobError::transient)?;
        documents
            .delete_by_id(&document.id)
            .await
            .map_err(JobError::transient)?;
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, document_id = %document.id, "document purged");
        Ok(json!({ "purged": true, "documentId": document.id }))
    }
}
