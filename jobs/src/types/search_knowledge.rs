use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

pub const QUEUE: &str = "search";

/// Searches the knowledge base for the api when only the workers can reach
/// the vector store (the embedded one). The api waits on `reply_key` (a
/// Redis list) for the answer, so no job record is written.
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
    /// Redis list the worker pushes the JSON answer to.
    pub reply_key: String,
}

impl Job for SearchKnowledge {
    const NAME: &'static str = "search_knowledge";
    const QUEUE: &'static str = QUEUE;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(10);
    const RECORDED: bool = false;
}
