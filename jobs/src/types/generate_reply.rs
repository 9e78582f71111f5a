use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

pub const QUEUE: &str = "replies";

/// One earlier turn of a test conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestTurn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// Answers a customer message (or a test message) from the agent's knowledge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateReply {
    /// Conversation to answer; `None` in test mode.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The customer message that triggered the reply.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The agent that answers.
    pub agent_id: String,
    /// Test mode: the message to answer, nothing is stored in a conversation.
    #[serde(default)]
    pub test_input: Option<String>,
    /// Test mode: the earlier turns, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<TestTurn>,
    /// Test mode: a Redis list the api waits on for the answer (`?wait=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_key: Option<String>,
}

impl Job for GenerateReply {
    const NAME: &'static str = "generate_reply";
    const QUEUE: &'static str = QUEUE;
    const MAX_ATTEMPTS: u32 = 4;
    const TIMEOUT: Duration = Duration::from_secs(120);

    fn idempotency_key(&self) -> Option<String> {
        self.message_id.as_ref().map(|m| format!("reply:{m}"))
    }
}
