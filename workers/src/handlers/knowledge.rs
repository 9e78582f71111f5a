//! The knowledge base jobs: ingest a document (extract → chunk → BM25 →
//! index, with live status), purge a deleted one, and search for the api.

use std::sync::Arc;

use bson::{Document, doc};
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::events;
use aigentable_jobs::types::{IngestDocument, PurgeDocument, SearchKnowledge};
use aigentable_platform::chunking::{ChunkOptions, chunk};
use aigentable_platform::extract::{DEFAULT_EXTRACT_TIMEOUT, extract_isolated, sniff};
use aigentable_platform::files;
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::{DocumentStatus, KnowledgeDocument};
use aigentable_vectors::{CollectionSpec, Point, PointPayload, SearchQuery, VectorStore};

use crate::WorkerState;
use crate::runner::{Handle, JobContext, JobError};

/// Points upserted per call: the 64 to 256.
const UPSERT_BATCH: usize = 128;

/// The vector store and the collection documents are indexed into, created
/// if missing. Dense embeddings join when AI providers do; until then every
/// tenant shares the BM25 collection.
async fn indexed_collection(ctx: &JobContext) -> Result<(Arc<dyn VectorStore>, String), JobError> {
    sparse_collection(&ctx.state).await
}

async fn sparse_collection(
    state: &WorkerState,
) -> Result<(Arc<dyn VectorStore>, String), JobError> {
    let store = state
        .vectors
        .clone()
        .ok_or_else(|| JobError::permanent("this worker has no vector store configured"))?;
    let spec = CollectionSpec::sparse_only();
    store
        .ensure_collection(&spec)
        .await
        .map_err(JobError::transient)?;
    Ok((store, spec.name))
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
                let set =
                    doc! { "status": DocumentStatus::Failed.as_str(), "error": e.to_string() };
                let _ = update(&ctx, &self.document_id, set).await;
            }
        }
        result
    }
}

async fn ingest(job: &IngestDocument, ctx: &JobContext) -> Result<Value, JobError> {
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
    let (store, collection) = indexed_collection(ctx).await?;
    if !stage(ctx, &document.id, DocumentStatus::Parsing, 5).await? {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    let bytes = files::load(db, &document.file_id)
        .await
        .map_err(JobError::transient)?;
    let kind = sniff(&document.name, &bytes).map_err(JobError::permanent)?;
    let extracted = extract_isolated(kind, bytes, DEFAULT_EXTRACT_TIMEOUT)
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

    // BM25 vectors are computed locally; dense embeddings come with AI providers.
    update(
        ctx,
        &document.id,
        doc! { "status": DocumentStatus::Embedding.as_str(), "progress": 30, "chunkCount": i64::from(total_u32), "chunksDone": 0 },
    )
    .await?;
    let points: Vec<Point> = chunks
        .into_iter()
        .map(|c| {
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
                None,
            )
        })
        .collect();

    if !stage(ctx, &document.id, DocumentStatus::Indexing, 40).await? {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    // Re-indexing replaces: the old points go first (fewer chunks now would
    // otherwise leave stale ones behind).
    store
        .delete_document(&collection, ctx.tenant_id.as_str(), &document.id)
        .await
        .map_err(JobError::transient)?;
    let mut done = 0usize;
    for batch in points.chunks(UPSERT_BATCH) {
        store
            .upsert(&collection, batch.to_vec())
            .await
            .map_err(JobError::transient)?;
        done += batch.len();
        let progress = 40 + (60 * done / total.max(1)).min(59);
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
        },
    )
    .await?;
    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, document_id = %document.id, chunks = total, kind = kind.as_str(), "document indexed");
    Ok(
        json!({ "documentId": document.id, "chunks": total, "pages": extracted.pages, "sheets": extracted.sheets }),
    )
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
        let (store, collection) = indexed_collection(&ctx).await?;
        store
            .delete_document(&collection, ctx.tenant_id.as_str(), &document.id)
            .await
            .map_err(JobError::transient)?;
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
    let (store, collection) = sparse_collection(state).await?;
    let mut search = SearchQuery::new(tenant.as_str(), query.to_owned(), limit);
    if let Some(agent) = agent_id {
        search = search.agent(agent.to_owned());
    }
    store
        .search(&collection, &search)
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
