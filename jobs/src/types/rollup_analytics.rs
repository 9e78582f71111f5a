use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Aggregates one hour of conversations and messages into analytics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupAnalytics {
    /// The hour to roll up, ISO-8601 (e.g. `2026-11-26T10:00:00Z`).
    pub hour: String,
}

impl Job for RollupAnalytics {
    const NAME: &'static str = "rollup_analytics";
    const QUEUE: Queue = Queue::Maintenance;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("rollup:{}", self.hour))
    }
}
