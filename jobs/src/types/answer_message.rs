use std::time::Duration;

use serde::{Deserialize, Serialize};

use aigentable_platform::analytics::facts::Fact;
use aigentable_platform::model::Conversation;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerMessage {
    /// The agent that answers.
    pub agent_id: String,
    pub conversation_id: String,
    /// The customer message that asks for the reply.
    pub message_id: String,
    /// The conversation as the inbound job left it a moment before, so
    /// that the reply's first run need not read it again (whether the bot
    /// still answers is checked when the reply is stored). A retry, or a
    /// job the sweep queued, reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Box<Conversation>>,
    /// The message's analytics fact, which the inbound job leaves to the
    /// reply: recorded with the reply's in one write, or on its own when
    /// no reply is stored (whatever the job's outcome; a fact is stored
    /// once, so a retry recording it again changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact: Option<Box<Fact>>,
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
            conversation: None,
            fact: None,
        };
        assert_eq!(job.job_id(), "answer-m1");
        assert_eq!(job.job_id(), job.clone().job_id());
    }

    /// The payload travels through Redis as JSON: the conversation comes
    /// back as it went, times and handoff included.
    #[test]
    fn the_conversation_survives_the_queue() {
        use aigentable_platform::model::conversation::{Handoff, HandoffReason};
        let json = serde_json::json!({
            "_id": "c1", "tenantId": "t1", "channelId": "ch1", "channelType": "WHATSAPP",
            "agentId": "a1", "contactId": "k1", "externalUserId": "5511",
            "status": "ACTIVE", "unreadCount": 2, "messageCount": 5,
            "createdAt": { "$date": { "$numberLong": "1764600000123" } },
            "updatedAt": { "$date": { "$numberLong": "1764600000456" } },
            "lastMessageAt": { "$date": { "$numberLong": "1764600000456" } },
        });
        let mut conversation: Conversation = serde_json::from_value(json).expect("a conversation");
        conversation.handoff = Some(Handoff::new(
            HandoffReason::CustomerRequest,
            "asked".into(),
            Some("m0".into()),
        ));
        let job = AnswerMessage {
            agent_id: "a1".into(),
            conversation_id: "c1".into(),
            message_id: "m1".into(),
            conversation: Some(Box::new(conversation.clone())),
            fact: Some(Box::new(Fact::about(
                &conversation,
                aigentable_platform::analytics::facts::FactKind::CustomerMessage,
                "m:m1".into(),
                conversation.created_at,
            ))),
        };
        let back: AnswerMessage =
            serde_json::from_str(&serde_json::to_string(&job).expect("json")).expect("parsed");
        let c = back.conversation.expect("carried");
        assert_eq!(c.id, "c1");
        assert_eq!(c.created_at, conversation.created_at);
        assert_eq!(c.last_message_at, conversation.last_message_at);
        assert_eq!(c.message_count, 5);
        // Times keep BSON's milliseconds, as they do in MongoDB.
        let ms = |h: &Option<Handoff>| {
            h.as_ref().map(|h| {
                (
                    h.reason,
                    h.message_id.clone(),
                    h.created_at.timestamp_millis(),
                )
            })
        };
        assert_eq!(ms(&c.handoff), ms(&conversation.handoff));
        assert_eq!(c.external_user_id, "5511");
        let fact = back.fact.expect("the fact travels with it");
        assert_eq!(fact.id, "m:m1");
        assert_eq!(fact.at, conversation.created_at);
        assert_eq!(fact.conversation_id, "c1");
    }
}
