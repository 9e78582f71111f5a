use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Answers every case of an evaluation set through the agent's reply path
/// (no conversation stored) and scores the answers into the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalRun {
    pub run_id: String,
    pub eval_set_id: String,
    pub agent_id: String,
}

impl Job for EvalRun {
    const NAME: &'static str = "eval_run";
    const QUEUE: Queue = Queue::Replies;
    const MAX_ATTEMPTS: u32 = 3;
    /// 200 cases at most, each one retrieval and one generation.
    const TIMEOUT: Duration = Duration::from_secs(1800);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("eval-run:{}", self.run_id))
    }
}
