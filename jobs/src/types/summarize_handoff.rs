use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use aigentable_platform::model::Conversation;

use crate::{Job, Queue};

/// Writes the brief of a conversation's handoff (what the customer wants,
/// what the bot said, the customer's sentiment, the documents involved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummarizeHandoff {
    pub conversation_id: String,
    /// The handoff this brief is for: a brief for a handoff that was
    /// replaced or cleared meanwhile is not stored.
    pub handoff_at: DateTime<Utc>,
    /// Staff asked for the brief again: no idempotency key, so the request
    /// is not folded into the first brief's job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regenerate: bool,
}

impl SummarizeHandoff {
    /// The job for the conversation's current handoff, if it has one.
    pub fn for_conversation(conversation: &Conversation) -> Option<Self> {
        conversation.handoff.as_ref().map(|h| Self {
            conversation_id: conversation.id.clone(),
            handoff_at: h.created_at,
            regenerate: false,
        })
    }
}

impl Job for SummarizeHandoff {
    const NAME: &'static str = "summarize_handoff";
    // Beside the replies: the same providers, and staff wait on it.
    const QUEUE: Queue = Queue::Replies;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(90);

    fn idempotency_key(&self) -> Option<String> {
        (!self.regenerate).then(|| {
            format!(
                "handoff-brief:{}:{}",
                self.conversation_id,
                self.handoff_at.timestamp_millis()
            )
        })
    }
}
