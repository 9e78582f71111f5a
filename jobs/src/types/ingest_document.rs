use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Extracts, chunks, embeds and indexes one uploaded document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestDocument {
    /// The document to extract, chunk, embed and index.
    pub document_id: String,
    /// Agent whose knowledge base receives it.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Set when the tenant's embedding model changed (`model/dims`, or
    /// `bm25`): part of the idempotency key, so a re-index for the new
    /// model is never folded into an ingestion still running for the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reindex_for: Option<String>,
}

impl Job for IngestDocument {
    const NAME: &'static str = "ingest_document";
    const QUEUE: Queue = Queue::Ingest;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn idempotency_key(&self) -> Option<String> {
        Some(match &self.reindex_for {
            Some(model) => format!("ingest:{}:{model}", self.document_id),
            None => format!("ingest:{}", self.document_id),
        })
    }
}
