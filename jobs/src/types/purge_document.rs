use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Removes a deleted document's vectors, its stored file and its record, so
/// that nothing is left orphaned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeDocument {
    pub document_id: String,
}

impl Job for PurgeDocument {
    const NAME: &'static str = "purge_document";
    const QUEUE: Queue = Queue::Ingest;
    const MAX_ATTEMPTS: u32 = 8;
    const TIMEOUT: Duration = Duration::from_secs(120);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("purge:{}", self.document_id))
    }
}
