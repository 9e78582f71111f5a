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
}

impl Job for IngestDocument {
    const NAME: &'static str = "ingest_document";
    const QUEUE: Queue = Queue::Ingest;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("ingest:{}", self.document_id))
    }
}
