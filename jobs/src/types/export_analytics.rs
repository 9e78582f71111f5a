use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Builds an analytics export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportAnalytics {
    /// Export record to fill.
    pub export_id: String,
    /// Start of the period, ISO-8601.
    pub from: String,
    /// End of the period, ISO-8601.
    pub to: String,
    /// `csv` or `json`.
    pub format: String,
}

impl Job for ExportAnalytics {
    const NAME: &'static str = "export_analytics";
    const QUEUE: Queue = Queue::Maintenance;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("export:{}", self.export_id))
    }
}
