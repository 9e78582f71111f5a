//! The knowledge base jobs: ingest a document (extract → chunk → embed →
//! index, with live status), purge a deleted one, and search for the api
//! and the reply job ([`retrieve`]).
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
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::events;
use aigentable_jobs::types::{IngestDocument, PurgeDocument, SearchKnowledge};
use aigentable_platform::chunking::{ChunkOptions, chunk};
use aigentable_platform::extract::{extract_isolated, sniff};
use aigentable_platform::files;
use aigentable_platform::ids::TenantId;
use aigentable_platform::llm::index::{self, IndexedModel};
use aigentable_platform::llm::{LlmClient, LlmError, embedding};
use aigentable_platform::model::{DocumentStatus, KnowledgeDocument};
use aigentable_platform::usage;
use aigentable_vectors::{CollectionSpec, Point, PointPayload, VectorStore};

use crate::WorkerState;
use crate::runner::{Handle, JobContext, JobError};

/// Points upserted per call: the 64 to 256.
const UPSERT_BATCH: usize = 128;

fn store(state: &WorkerState) -> Result<Arc<dyn VectorStore>, JobError> {
    state
        .vectors
        .clone()
        .ok_or_else(|| JobError::permanent("this worker has no vector store configured"))
}

/// The tenant's searched collection (BM25 until a model's index is
/// complete) and the one being filled, if any.
async fn tenant_index(
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

fn llm_error(e: LlmError) -> JobError {
    if e.is_retryable() {
        JobError::transient(format!("embedding failed: {e}"))
    } else {
        JobError::permanent(format!("embedding failed: {e}"))
    }
}

/// Applies `set` to the document (unless it is being deleted) and tells the
/// browsers; `None` when the document is gone or being deleted.
async fn update(
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

async fn stage(
    ctx: &JobContext,
    id: &str,
    status: DocumentStatus,
    progress: u8,
) -> Result<bool, JobError> {
    let set = doc! { "status": status.as_str(), "progress": i32::from(progress), "error": bson::Bson::Null };
    Ok(update(ctx, id, set).await?.is_some())
}

impl Handle for IngestDocument {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let result = ingest(&self, &ctx).await;
        if let Err(e) = &result {
            // A document never stays half-processed: it says why it failed
            // once no retry is left.
            let last_attempt =
                matches!(e, JobError::Permanent(_)) || ctx.attempt >= Self::MAX_ATTEMPTS;
            if last_attempt {
                mark_failed(&ctx, &self.document_id, &e.to_string()).await;
            }
        }
        result
    }
}

/// Marks a document `FAILED` with the reason, in plain words.
pub(crate) async fn mark_failed(ctx: &JobContext, id: &str, reason: &str) {
    let set = doc! { "status": DocumentStatus::Failed.as_str(), "error": reason };
    let _ = update(ctx, id, set).await;
}

/// Extracts, chunks, embeds (when the tenant has an embedding model) and
/// indexes one document, with live status. Also run by `train_agent` for
/// each of an agent's documents.
pub(crate) async fn ingest(job: &IngestDocument, ctx: &JobContext) -> Result<Value, JobError> {
    let db = &ctx.state.platform.db;
    let documents = db.scoped::<KnowledgeDocument>(&ctx.tenant_id);
    let Some(document) = documents
        .find_by_id(&job.document_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(json!({ "skipped": "the document no longer exists" }));
    };
    if document.status == DocumentStatus::Deleting {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    let store = store(&ctx.state)?;
    if !stage(ctx, &document.id, DocumentStatus::Parsing, 5).await? {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    let bytes = files::load(db, &document.file_id)
        .await
        .map_err(JobError::transient)?;
    let kind = sniff(&document.name, &bytes).map_err(JobError::permanent)?;
    let extracted = extract_isolated(kind, bytes, ctx.state.platform.config.extract)
        .await
        .map_err(JobError::permanent)?;

    let mut set = doc! { "status": DocumentStatus::Chunking.as_str(), "progress": 20 };
    if let Some(pages) = extracted.pages {
        set.insert("pages", i64::from(pages));
    }
    if let Some(sheets) = extracted.sheets {
        set.insert("sheets", i64::from(sheets));
    }
    update(ctx, &document.id, set).await?;
    let chunks = chunk(&extracted.sections, ChunkOptions::default());
    let total = chunks.len();
    let total_u32 = u32::try_from(total).unwrap_or(u32::MAX);

    update(
        ctx,
        &document.id,
        doc! { "status": DocumentStatus::Embedding.as_str(), "progress": 30, "chunkCount": i64::from(total_u32), "chunksDone": 0 },
    )
    .await?;
    // Dense vectors from the tenant's default provider when it has an
    // embedding model; BM25 vectors are always computed locally.
    let provider = index::embedding_provider(db, &ctx.tenant_id)
        .await
        .map_err(JobError::transient)?;
    let (target, dense) = match &provider {
        None => (IndexedModel::sparse(), None),
        Some(p) => {
            let platform = &ctx.state.platform;
            let client = LlmClient::from_provider(
                p,
                &platform.secrets,
                &platform.egress,
                platform.config.llm.timeout,
            )
            .map_err(llm_error)?;
            let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
            let doc_id = document.id.clone();
            let embedded = embedding::embed_all(
                &client,
                &platform.kv,
                &ctx.tenant_id,
                &platform.config.llm,
                &texts,
                |done| {
                    let doc_id = doc_id.clone();
                    async move {
                        let progress = 30 + (40 * done / total.max(1)).min(39);
                        let _ = update(
                            ctx,
                            &doc_id,
                            doc! { "progress": i32::try_from(progress).unwrap_or(69) },
                        )
                        .await;
                    }
                },
            )
            .await
            .map_err(llm_error)?;
            if let Err(e) = usage::record_tokens(
                db,
                &ctx.tenant_id,
                document.agent_id.as_deref(),
                Some(&p.id),
                &embedded.model,
                "embedding",
                &embedded.usage,
            )
            .await
            {
                tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, error = %e, "could not record embedding usage");
            }
            let model = p.embedding_model().unwrap_or_default().to_owned();
            let dim = embedded.vectors.first().map(Vec::len);
            let target = match dim {
                Some(dim) => {
                    let spec = CollectionSpec::for_model(&model, dim);
                    IndexedModel {
                        collection: spec.name,
                        model: Some(model),
                        dims: u32::try_from(dim).ok(),
                    }
                }
                // Nothing to embed (no text): the document still lands in
                // the collection search will use.
                None => tenant_index(&ctx.state, &ctx.tenant_id).await?.0,
            };
            (target, Some(embedded.vectors))
        }
    };
    store
        .ensure_collection(&target.spec())
        .await
        .map_err(JobError::transient)?;
    let mut dense = dense.map(Vec::into_iter);
    let points: Vec<Point> = chunks
        .into_iter()
        .map(|c| {
            let vector = dense.as_mut().and_then(Iterator::next);
            Point::new(
                PointPayload {
                    tenant_id: ctx.tenant_id.to_string(),
                    agent_id: document.agent_id.clone(),
                    document_id: document.id.clone(),
                    document_name: document.name.clone(),
                    chunk_index: u32::try_from(c.index).unwrap_or(u32::MAX),
                    page: c.page,
                    sheet: c.sheet,
                    text: c.text,
                },
                vector,
            )
        })
        .collect();

    if !stage(ctx, &document.id, DocumentStatus::Indexing, 70).await? {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    // Re-indexing replaces: the old points go first (fewer chunks now would
    // otherwise leave stale ones behind).
    store
        .delete_document(&target.collection, ctx.tenant_id.as_str(), &document.id)
        .await
        .map_err(JobError::transient)?;
    let mut done = 0usize;
    for batch in points.chunks(UPSERT_BATCH) {
        store
            .upsert(&target.collection, batch.to_vec())
            .await
            .map_err(JobError::transient)?;
        done += batch.len();
        let progress = 70 + (30 * done / total.max(1)).min(29);
        update(
            ctx,
            &document.id,
            doc! { "chunksDone": i64::try_from(done).unwrap_or(i64::MAX), "progress": i32::try_from(progress).unwrap_or(99) },
        )
        .await?;
    }
    update(
        ctx,
        &document.id,
        doc! {
            "status": DocumentStatus::Ready.as_str(),
            "progress": 100,
            "chunksDone": i64::from(total_u32),
            "processedAt": bson::DateTime::now(),
            "indexedCollection": &target.collection,
        },
    )
    .await?;
    reconcile(&ctx.state, &ctx.tenant_id, &target).await?;
    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, document_id = %document.id, chunks = total, kind = kind.as_str(), collection = %target.collection, "document indexed");
    Ok(json!({
        "documentId": document.id,
        "chunks": total,
        "pages": extracted.pages,
        "sheets": extracted.sheets,
        "collection": target.collection,
        "embeddingModel": target.model,
    }))
}

/// After a document went into `written`: when that is not the searched
/// collection, record it as the target, and once every live document of
/// the tenant is in it, make it the searched one and remove the tenant's
/// points from the previous one.
async fn reconcile(
    state: &WorkerState,
    tenant: &TenantId,
    written: &IndexedModel,
) -> Result<(), JobError> {
    let db = &state.platform.db;
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

/// Answers the api on `reply_key` (a Redis list it blocks on), then lets
/// the key expire if nobody reads it.
impl Handle for SearchKnowledge {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let answer = match search(&self, &ctx).await {
            Ok(results) => json!({ "ok": true, "results": results }),
            Err(e) => json!({ "ok": false, "message": e.to_string() }),
        };
        let kv = &ctx.state.platform.kv;
        let mut conn = kv.conn();
        redis::pipe()
            .cmd("RPUSH")
            .arg(&self.reply_key)
            .arg(answer.to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(&self.reply_key)
            .arg(60)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(JobError::transient)?;
        Ok(Value::Null)
    }
}

async fn search(job: &SearchKnowledge, ctx: &JobContext) -> Result<Vec<Value>, JobError> {
    let limit = usize::try_from(job.limit).unwrap_or(10).clamp(1, 50);
    let hits = retrieve(
        &ctx.state,
        &ctx.tenant_id,
        job.agent_id.as_deref(),
        &job.query,
        limit,
    )
    .await?;
    Ok(hits.iter().map(hit_json).collect())
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

/// A search hit as the api returns it.
pub fn hit_json(hit: &aigentable_vectors::Hit) -> Value {
    let p = &hit.payload;
    json!({
        "documentId": p.document_id,
        "documentName": p.document_name,
        "agentId": p.agent_id,
        "chunkIndex": p.chunk_index,
        "page": p.page,
        "sheet": p.sheet,
        "snippet": p.text,
        "score": hit.score,
    })
}
