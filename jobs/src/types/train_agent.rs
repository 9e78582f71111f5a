use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// (Re)indexes an agent's documents; the agent is `TRAINING` meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainAgent {
    /// The agent to (re)index.
    pub agent_id: String,
    /// Documents to attach first; empty means all of the agent's documents.
    #[serde(default)]
    pub document_ids: Vec<String>,
}

impl Job for TrainAgent {
    const NAME: &'static str = "train_agent";
    const QUEUE: Queue = Queue::Training;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(3600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("train:{}", self.agent_id))
    }
}
