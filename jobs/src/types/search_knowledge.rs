use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::answer::{Ask, ReplyTo};
use crate::{Job, Queue};

/// Searches the knowledge base for the api when only the workers can reach
/// the vector store (the embedded one). The api waits on `replyTo` for the
/// answer, so no job record is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchKnowledge {
    /// Search text.
    pub query: String,
    /// Restricts the search to one agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Maximum number of passages.
    pub limit: u32,
    pub reply_to: ReplyTo,
}

/// One passage found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeHit {
    pub document_id: String,
    pub document_name: String,
    pub agent_id: Option<String>,
    pub chunk_index: u32,
    /// 1-based page, for PDFs.
    pub page: Option<u32>,
    /// Sheet name, for spreadsheets.
    pub sheet: Option<String>,
    /// The matching passage.
    pub snippet: String,
    /// Fused relevance (reciprocal rank fusion); higher is better.
    pub score: f32,
}

impl From<&aigentable_vectors::Hit> for KnowledgeHit {
    fn from(hit: &aigentable_vectors::Hit) -> Self {
        let p = &hit.payload;
        Self {
            document_id: p.document_id.clone(),
            document_name: p.document_name.clone(),
            agent_id: p.agent_id.clone(),
            chunk_index: p.chunk_index,
            page: p.page,
            sheet: p.sheet.clone(),
            snippet: p.text.clone(),
            score: hit.score,
        }
    }
}

impl Job for SearchKnowledge {
    const NAME: &'static str = "search_knowledge";
    const QUEUE: Queue = Queue::Search;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(10);
    const RECORDED: bool = false;
}

impl Ask for SearchKnowledge {
    type Answer = Vec<KnowledgeHit>;

    fn reply_to(&self) -> Option<&ReplyTo> {
        Some(&self.reply_to)
    }
}
