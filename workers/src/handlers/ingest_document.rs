//! `ingest_document`: extract → chunk → embed → index one document, with
//! live status (`document-updated`) at every stage. Dense embeddings come
//! from the tenant's default AI provider when it has an embedding model
//! (see [`super::knowledge`]); BM25 vectors are always computed locally.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_platform::chunking::{ChunkOptions, chunk};
use aigentable_platform::extract::{extract_isolated, sniff};
use aigentable_platform::files;
use aigentable_platform::llm::index::{self, IndexedModel};
use aigentable_platform::llm::{LlmClient, embedding};
use aigentable_platform::model::{DocumentStatus, KnowledgeDocument};
use aigentable_platform::usage;
use aigentable_vectors::{CollectionSpec, INDEX_BATCH, Point, PointPayload};

use super::knowledge::{llm_error, mark_failed, reconcile, stage, store, tenant_index, update};
use crate::runner::{Handle, JobContext, JobError};
use aigentable_jobs::types::IngestDocument;

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
    let mut extracted = extract_isolated(kind, bytes, ctx.state.platform.config.extract)
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
    // Chunking and BM25 are CPU work: on the blocking pool, so that they do
    // not hold up the heartbeats and the other jobs of this process.
    let sections = std::mem::take(&mut extracted.sections);
    let chunks = tokio::task::spawn_blocking(move || chunk(&sections, ChunkOptions::default()))
        .await
        .map_err(JobError::transient)?;
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
                platform,
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
    let (tenant_id, agent_id, document_id, document_name) = (
        ctx.tenant_id.to_string(),
        document.agent_id.clone(),
        document.id.clone(),
        document.name.clone(),
    );
    let points: Vec<Point> = tokio::task::spawn_blocking(move || {
        chunks
            .into_iter()
            .map(|c| {
                let vector = dense.as_mut().and_then(Iterator::next);
                Point::new(
                    PointPayload {
                        tenant_id: tenant_id.clone(),
                        agent_id: agent_id.clone(),
                        document_id: document_id.clone(),
                        document_name: document_name.clone(),
                        chunk_index: u32::try_from(c.index).unwrap_or(u32::MAX),
                        page: c.page,
                        sheet: c.sheet,
                        text: c.text,
                    },
                    vector,
                )
            })
            .collect()
    })
    .await
    .map_err(JobError::transient)?;

    if !stage(ctx, &document.id, DocumentStatus::Indexing, 70).await? {
        return Ok(json!({ "skipped": "the document is being deleted" }));
    }
    if replaces_earlier_points(document.processed_at.is_some(), ctx.first_run()) {
        store
            .delete_document(&target.collection, ctx.tenant_id.as_str(), &document.id)
            .await
            .map_err(JobError::transient)?;
    }
    let mut done = 0usize;
    for batch in points.chunks(INDEX_BATCH) {
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

/// Whether a document's earlier points go before its new ones. Re-indexing
/// replaces: a document indexed before may have fewer chunks now, which
/// would leave stale ones behind. A first indexing has none to remove (the
/// filtered delete costs as much as a large upsert on the embedded store):
/// point ids are the document's and the chunk's, so what an interrupted
/// earlier run wrote is overwritten, not duplicated. A retry (or a run
/// resuming a stopped one) removes them anyway, in case the chunker changed
/// in between (a deploy).
pub fn replaces_earlier_points(indexed_before: bool, first_run: bool) -> bool {
    indexed_before || !first_run
}

#[cfg(test)]
mod tests {
    use super::replaces_earlier_points;

    #[test]
    fn only_a_first_indexing_on_its_first_attempt_skips_the_delete() {
        assert!(!replaces_earlier_points(false, true));
        assert!(replaces_earlier_points(false, false));
        assert!(replaces_earlier_points(true, true));
    }
}
