use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Registers the platform's webhook URL (and secret token) with the
/// channel's provider, so that nobody has to call the provider by hand.
/// Telegram only today (`setWebhook`); Meta webhooks are configured once
/// per app in Meta's console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterWebhook {
    pub channel_id: String,
}

impl Job for RegisterWebhook {
    const NAME: &'static str = "register_webhook";
    const QUEUE: Queue = Queue::Integrations;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn idempotency_key(&self) -> Option<String> {
        Some(format!("register-webhook:{}", self.channel_id))
    }
}
