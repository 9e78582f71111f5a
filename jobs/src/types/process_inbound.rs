use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Turns a verified webhook event into contacts, conversations and messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInbound {
    /// Channel the webhook arrived on.
    pub channel_id: String,
    /// Id of the stored raw webhook event.
    pub event_id: String,
}

impl Job for ProcessInbound {
    const NAME: &'static str = "process_inbound";
    const QUEUE: Queue = Queue::Inbound;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("inbound:{}", self.event_id))
    }
}
