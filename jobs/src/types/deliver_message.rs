use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Sends a stored outbound message through its channel's API, exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverMessage {
    /// The stored outbound message to send.
    pub message_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The channel to send through.
    pub channel_id: String,
}

impl Job for DeliverMessage {
    const NAME: &'static str = "deliver_message";
    const QUEUE: Queue = Queue::Outbound;
    const MAX_ATTEMPTS: u32 = 6;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("deliver:{}", self.message_id))
    }
}
