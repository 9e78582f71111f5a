//! What the knowledge jobs (`ingest_document`, `purge_document`,
//! `search_knowledge`, `train_agent`) and replies share: the tenant's vector
//! collections, document status updates, and search ([`retrieve`]).
//!
//! Dense embeddings: when the tenant's default AI provider has an embedding
//! model, chunks are embedded through it (batched, limited per tenant,
//! retried on 429/5xx: `platform::llm::embedding`) and indexed into that
//! model's collection (`chunks_<model>_<dim>`) with their BM25 vectors;
//! otherwise into the BM25 collection. The tenant's `knowledge_indexes`
//! record says which collection search uses; after a model change the
//! documents are re-indexed into the new collection and search switches
//! over when the last one is in (see [`reconcile`]).

use std::sync::Arc;

use bson::{Document, doc};

use aigentable_jobs::events;
use aigentable_platform::ids::TenantId;
use aigentable_platform::llm::LlmError;
use aigentable_platform::llm::index::{self, IndexedModel};
use aigentable_platform::model::{DocumentStatus, KnowledgeDocument};
use aigentable_vectors::VectorStore;

use crate::WorkerState;
use crate::runner::{JobContext, JobError};

pub(crate) fn store(state: &WorkerState) -> Result<Arc<dyn VectorStore>, JobError> {
    state
        .vectors
        .clone()
        .ok_or_else(|| JobError::permanent("this worker has no vector store configured"))
}

/// The tenant's searched collection (BM25 until a model's index is
/// complete) and the one being filled, if any.
pub(crate) async fn tenant_index(
    state: &WorkerState,
    tenant: &TenantId,
) -> Result<(IndexedModel, Option<IndexedModel>), JobError> {
    let record = index::load(&state.platform.db, tenant)
        .await
        .map_err(JobError::transient)?;
    Ok(match record {
        Some(r) => (r.active, r.target),
        None => (IndexedModel::sparse(), None),
    })
}

pub(crate) fn llm_error(e: LlmError) -> JobError {
    if e.is_retryable() {
        JobError::transient(format!("embedding failed: {e}"))
    } else {
        JobError::permanent(format!("embedding failed: {e}"))
    }
}

/// Applies `set` to the document (unless it is being deleted) and tells the
/// browsers; `None` when the document is gone or being deleted.
pub(crate) async fn update(
    ctx: &JobContext,
    id: &str,
    mut set: Document,
) -> Result<Option<KnowledgeDocument>, JobError> {
    set.insert("updatedAt", bson::DateTime::now());
    let updated = ctx
        .state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&ctx.tenant_id)
        .update_one(
            doc! { "_id": id, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
            doc! { "$set": set },
        )
        .await
        .map_err(JobError::transient)?;
    if let Some(d) = &updated {
        events::document_updated(&ctx.state.platform.kv, d).await;
    }
    Ok(updated)
}

pub(crate) async fn stage(
    ctx: &JobContext,
    id: &str,
    status: DocumentStatus,
    progress: u8,
) -> Result<bool, JobError> {
    let set = doc! { "status": status.as_str(), "progress": i32::from(progress), "error": bson::Bson::Null };
    Ok(update(ctx, id, set).await?.is_some())
}

/// Marks a document `FAILED` with the reason, in plain words.
pub(crate) async fn mark_failed(ctx: &JobContext, id: &str, reason: &str) {
    let set = doc! { "status": DocumentStatus::Failed.as_str(), "error": reason };
    let _ = update(ctx, id, set).await;
}

/// After a document went into `written`: when that is not the searched
/// collection, record it as the target, and once every live document of
/// the tenant is in it, make it the searched one and remove the tenant's
/// points from the previous one.
pub(crate) async fn reconcile(
    state: &WorkerState,
    tenant: &TenantId,
    written: &IndexedModel,
) -> Result<(), JobError> {
    let db = &state.platform.db;
    // A write for a model that is no longer the tenant's (an ingestion
    // that started before the model changed) must not move the index: it
    // would end the switch to the new model.
    let current = index::embedding_provider(db, tenant)
        .await
        .map_err(JobError::transient)?;
    if written.model.as_deref() != current.as_ref().and_then(|p| p.embedding_model()) {
        tracing::debug!(tenant_id = %tenant, collection = %written.collection, "write for a former embedding model, index left alone");
        return Ok(());
    }
    let (active, target) = tenant_index(state, tenant).await?;
    if &active == written {
        // A switch that was abandoned (the model changed back) is over.
        if target.is_some() {
            index::save(db, tenant, &active, None)
                .await
                .map_err(JobError::transient)?;
        }
        return Ok(());
    }
    if target.as_ref() != Some(written) {
        index::save(db, tenant, &active, Some(written))
            .await
            .map_err(JobError::transient)?;
    }
    let documents = db.scoped::<KnowledgeDocument>(tenant);
    let pending = documents
        .count(doc! {
            "status": { "$nin": [DocumentStatus::Deleting.as_str(), DocumentStatus::Failed.as_str()] },
            "indexedCollection": { "$ne": &written.collection },
        })
        .await
        .map_err(JobError::transient)?;
    if pending > 0 {
        return Ok(());
    }
    index::save(db, tenant, written, None)
        .await
        .map_err(JobError::transient)?;
    tracing::info!(tenant_id = %tenant, from = %active.collection, to = %written.collection, "knowledge search switched to a new vector collection");
    // The old collection is shared with other tenants: only this tenant's
    // points go.
    let store = store(state)?;
    let mut page = 1;
    loop {
        let (docs, _) = documents
            .find_page(
                doc! {},
                doc! { "_id": 1 },
                aigentable_platform::db::PageRequest { page, limit: 100 },
            )
            .await
            .map_err(JobError::transient)?;
        if docs.is_empty() {
            break;
        }
        for d in &docs {
            if let Err(e) = store
                .delete_document(&active.collection, tenant.as_str(), &d.id)
                .await
            {
                tracing::warn!(tenant_id = %tenant, document_id = %d.id, error = %e, "could not remove old vectors after a model switch");
            }
        }
        page += 1;
    }
    Ok(())
}

/// Top passages of the tenant's knowledge (agent-filtered when given): BM25
/// always, fused with dense vectors when the tenant's default provider has
/// an embedding model.
pub async fn retrieve(
    state: &WorkerState,
    tenant: &TenantId,
    agent_id: Option<&str>,
    query: &str,
    limit: usize,
) -> Result<Vec<aigentable_vectors::Hit>, JobError> {
    let store = store(state)?;
    index::search(
        &state.platform,
        store.as_ref(),
        tenant,
        agent_id,
        query,
        limit,
    )
    .await
    .map_err(JobError::transient)
}
