use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

pub const QUEUE: &str = "search";

/// Searches the vector store when the api cannot reach it directly.
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
}

impl Job for SearchKnowledge {
    const NAME: &'static str = "search_knowledge";
    const QUEUE: &'static str = QUEUE;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(10);
}
