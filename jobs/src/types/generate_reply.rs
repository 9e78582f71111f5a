use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use aigentable_platform::llm::ChatRole;

use crate::answer::{Ask, ReplyTo};
use crate::{Job, Queue};

/// One earlier turn of a test conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestTurn {
    pub role: ChatRole,
    pub content: String,
}

/// Answers a customer message, or an agent test, from the agent's knowledge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateReply {
    /// The agent that answers.
    pub agent_id: String,
    /// Stored flat beside `agentId`, as it always was.
    #[serde(flatten)]
    pub mode: ReplyMode,
}

/// What is answered, and where the answer goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum ReplyMode {
    /// A customer's message: the reply is stored in the conversation and
    /// delivered on its channel.
    Conversation {
        conversation_id: String,
        /// The customer message that triggered the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// An agent test: nothing is stored in conversations; the answer is the
    /// job's result, and is sent to `replyTo` when the api waits for it.
    Test {
        test_input: String,
        /// The earlier turns, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        history: Vec<TestTurn>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<ReplyTo>,
        /// The api streams the answer (`?stream=true`): its text is sent
        /// to `replyTo` in pieces as it is written, before the answer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stream: bool,
    },
}

impl GenerateReply {
    /// The reply to a customer message in a conversation.
    pub fn to_message(agent_id: &str, conversation_id: &str, message_id: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            mode: ReplyMode::Conversation {
                conversation_id: conversation_id.to_owned(),
                message_id: Some(message_id.to_owned()),
            },
        }
    }
}

/// An agent test's answer: the job's result, and what a waiting api gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestAnswer {
    pub reply: String,
    /// `[{documentId, documentName, page, score}]`: the passages it drew on.
    #[serde(default)]
    pub sources: Vec<Value>,
    /// `{promptTokens, completionTokens, totalTokens}`; `None` without an AI provider.
    #[serde(default)]
    pub usage: Option<Value>,
    #[serde(default)]
    pub model: Option<String>,
    pub latency_ms: u64,
    /// Answered by quoting passages (no AI provider configured).
    #[serde(default)]
    pub retrieval_only: bool,
    /// The fallback message was used (nothing matched, or the provider failed).
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

impl Job for GenerateReply {
    const NAME: &'static str = "generate_reply";
    const QUEUE: Queue = Queue::Replies;
    const MAX_ATTEMPTS: u32 = 4;
    const TIMEOUT: Duration = Duration::from_secs(120);

    fn idempotency_key(&self) -> Option<String> {
        match &self.mode {
            ReplyMode::Conversation {
                message_id: Some(m),
                ..
            } => Some(format!("reply:{m}")),
            _ => None,
        }
    }
}

impl Ask for GenerateReply {
    type Answer = TestAnswer;

    fn reply_to(&self) -> Option<&ReplyTo> {
        match &self.mode {
            ReplyMode::Test { reply_to, .. } => reply_to.as_ref(),
            ReplyMode::Conversation { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{GenerateReply, ReplyMode};

    #[test]
    fn payloads_stored_before_the_mode_enum_still_decode() -> serde_json::Result<()> {
        let reply: GenerateReply = serde_json::from_value(json!({
            "conversationId": "c1", "messageId": "m1", "agentId": "a1"
        }))?;
        assert_eq!(reply, GenerateReply::to_message("a1", "c1", "m1"));
        let test: GenerateReply = serde_json::from_value(json!({
            "agentId": "a1", "testInput": "hours?",
            "history": [{"role": "assistant", "content": "hi"}]
        }))?;
        assert!(matches!(
            &test.mode,
            ReplyMode::Test { test_input, history, reply_to: None, stream: false }
                if test_input == "hours?" && history.len() == 1
        ));
        // Round trip keeps the flat shape job records show.
        let stored = serde_json::to_value(&reply)?;
        assert_eq!(
            stored,
            json!({"agentId": "a1", "conversationId": "c1", "messageId": "m1"})
        );
        Ok(())
    }
}
