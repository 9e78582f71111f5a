use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Requeues or fails jobs stuck `RUNNING` past their timeout and removes expired tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    /// The scheduler tick that asked for it, ISO-8601.
    pub tick: String,
}

impl Job for Sweep {
    const NAME: &'static str = "sweep";
    const QUEUE: Queue = Queue::Maintenance;
    const MAX_ATTEMPTS: u32 = 1;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("sweep:{}", self.tick))
    }
}
