use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::GenerateReply;
use crate::{Job, Queue};

/// Answers a customer's message in its conversation, queued by the inbound
/// job that stored it. No job record: the conversation is its record (the
/// reply, whose dedup key `reply:{messageId}` makes it one, or the
/// handoff), and like the webhook it answers it is kept by Redis (with its
/// append-only file) until it ran. The sweep queues it again for a
/// conversation the bot left waiting past a couple of minutes (once per
/// waiting spell). A suspended tenant's reply is handed to a recorded
/// `generate_reply`, which holds it until the tenant is reactivated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerMessage {
    /// The agent that answers.
    pub agent_id: String,
    pub conversation_id: String,
    /// The customer message that asks for the reply.
    pub message_id: String,
}

impl AnswerMessage {
    /// One id per message: asking again for a reply that is queued or
    /// being generated does nothing (see [`crate::JobClient::push`]).
    pub fn job_id(&self) -> String {
        format!("answer-{}", self.message_id)
    }
}

impl Job for AnswerMessage {
    const NAME: &'static str = "answer_message";
    const QUEUE: Queue = <GenerateReply as Job>::QUEUE;
    const MAX_ATTEMPTS: u32 = <GenerateReply as Job>::MAX_ATTEMPTS;
    const TIMEOUT: Duration = <GenerateReply as Job>::TIMEOUT;
    const RECORDED: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_one_answer_id() {
        let job = AnswerMessage {
            agent_id: "a1".into(),
            conversation_id: "c1".into(),
            message_id: "m1".into(),
        };
        assert_eq!(job.job_id(), "answer-m1");
        assert_eq!(job.job_id(), job.clone().job_id());
    }
}
