use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Calls the channel's provider once to check its credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestChannel {
    /// Channel whose provider credentials are checked.
    pub channel_id: String,
}

impl Job for TestChannel {
    const NAME: &'static str = "test_channel";
    const QUEUE: Queue = Queue::Integrations;
    const MAX_ATTEMPTS: u32 = 2;
    const TIMEOUT: Duration = Duration::from_secs(30);
}
