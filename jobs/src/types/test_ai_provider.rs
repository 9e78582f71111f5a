use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Makes one cheap call to an AI provider to check it works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestAiProvider {
    /// AI provider to call once.
    pub provider_id: String,
}

impl Job for TestAiProvider {
    const NAME: &'static str = "test_ai_provider";
    const QUEUE: Queue = Queue::Integrations;
    const MAX_ATTEMPTS: u32 = 2;
    const TIMEOUT: Duration = Duration::from_secs(60);
}
