//! Contacts, conversations and messages: what customers said on a channel
//! and what the agent or staff answered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;
use crate::model::ChannelType;

pub const CONTACTS: &str = "contacts";
pub const CONVERSATIONS: &str = "conversations";
pub const MESSAGES: &str = "messages";

/// A customer as one channel knows them (a WhatsApp number, a PSID, a
/// Telegram chat, a widget visitor).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// The provider's id for the customer (wa_id, PSID, IGSID, chat id,
    /// visitor id); unique per channel.
    pub external_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for Contact {
    const COLLECTION: &'static str = CONTACTS;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// Who owns a conversation and whether it is still going on.
///
/// `ACTIVE` the bot answers; `WAITING` handed off, waiting for a human;
/// `ASSIGNED` a staff member answers and the bot is silent; `RESOLVED` done,
/// reopened by the customer's next message; `CLOSED` final, the customer's
/// next message starts a new conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversationStatus {
    Active,
    Waiting,
    Assigned,
    Resolved,
    Closed,
}

impl ConversationStatus {
    pub const ALL: [ConversationStatus; 5] = [
        ConversationStatus::Active,
        ConversationStatus::Waiting,
        ConversationStatus::Assigned,
        ConversationStatus::Resolved,
        ConversationStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Active => "ACTIVE",
            ConversationStatus::Waiting => "WAITING",
            ConversationStatus::Assigned => "ASSIGNED",
            ConversationStatus::Resolved => "RESOLVED",
            ConversationStatus::Closed => "CLOSED",
        }
    }

    /// Whether the bot may answer customer messages in this state.
    pub fn bot_answers(self) -> bool {
        self == ConversationStatus::Active
    }

    /// The state machine behind `PUT /conversations/:id/status` and
    /// `/assign`. Staying in the same state is allowed (idempotent calls).
    pub fn can_move_to(self, to: ConversationStatus) -> bool {
        use ConversationStatus::*;
        if self == to {
            return true;
        }
        match self {
            Active => matches!(to, Waiting | Assigned | Resolved | Closed),
            Waiting => matches!(to, Active | Assigned | Resolved | Closed),
            Assigned => matches!(to, Active | Waiting | Resolved | Closed),
            Resolved => matches!(to, Active | Closed),
            Closed => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// The agent that answers; `None` when the channel has no agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    pub contact_id: String,
    /// The contact's provider id, copied so routing needs no join.
    pub external_user_id: String,
    /// Denormalized for lists.
    #[serde(default)]
    pub contact_name: Option<String>,
    pub status: ConversationStatus,
    /// The staff member who took the conversation over.
    #[serde(default)]
    pub assigned_to: Option<String>,
    #[serde(default)]
    pub last_message_preview: Option<String>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub last_message_at: Option<DateTime<Utc>>,
    /// Customer messages staff have not read yet.
    #[serde(default)]
    pub unread_count: i64,
    #[serde(default)]
    pub message_count: i64,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Why the platform last handed the conversation to staff; cleared when
    /// it goes back to the bot.
    #[serde(default)]
    pub handoff: Option<Handoff>,
    /// The customer's profile as their last message gave it: while the
    /// next one gives the same, the contact is not read (one MongoDB round
    /// trip less per returning customer's message). Internal, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_seen: Option<ContactSeen>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

/// A customer's profile fields as a provider gave them with a message,
/// blank ones left out: what a contact is kept up to date with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactSeen {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// Why the platform (not a person) handed a conversation to staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffReason {
    /// The customer asked for a person.
    CustomerRequest,
    /// A member of staff took the conversation from the bot.
    StaffTakeover,
    /// The AI provider failed (errors, timeouts, an empty answer).
    ProviderFailure,
    /// Nothing in the knowledge base matched the question.
    LowConfidence,
    /// The plan's monthly allowance of bot replies is used up.
    MonthlyCap,
    /// A bot reply could not be delivered to the customer.
    DeliveryFailed,
}

impl HandoffReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerRequest => "customer_request",
            Self::StaffTakeover => "staff_takeover",
            Self::ProviderFailure => "provider_failure",
            Self::LowConfidence => "low_confidence",
            Self::MonthlyCap => "monthly_cap",
            Self::DeliveryFailed => "delivery_failed",
        }
    }
}

/// A handoff and the note staff see with it, then the brief written for
/// whoever picks it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    pub reason: HandoffReason,
    pub note: String,
    /// The message concerned, when there is one.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    /// Written by the `summarize_handoff` job shortly after the handoff.
    #[serde(default)]
    pub brief: Option<HandoffBrief>,
}

/// The customer's mood over their recent messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    Positive,
    Neutral,
    Negative,
}

impl Sentiment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Neutral => "neutral",
            Self::Negative => "negative",
        }
    }
}

/// How a brief was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BriefMethod {
    /// By the tenant's AI provider.
    Llm,
    /// From the conversation's own words (no provider, or it failed).
    Extractive,
}

impl BriefMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Extractive => "extractive",
        }
    }
}

/// A document the bot drew on in the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BriefSource {
    pub document_id: String,
    pub document_name: String,
}

/// What the person taking over needs first: what the customer wants, what
/// the bot already said, how the customer feels, and the documents involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoffBrief {
    pub summary: String,
    pub intent: String,
    pub sentiment: Sentiment,
    pub sources: Vec<BriefSource>,
    pub method: BriefMethod,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
}

impl Handoff {
    /// A handoff now, its brief still to be written.
    pub fn new(reason: HandoffReason, note: String, message_id: Option<String>) -> Self {
        Self {
            reason,
            note,
            message_id,
            created_at: Utc::now(),
            brief: None,
        }
    }

    /// The handoff as the api shows it: the brief's fields are null until
    /// the brief is written.
    pub fn view(&self) -> serde_json::Value {
        let brief = self.brief.as_ref();
        serde_json::json!({
            "reason": self.reason.as_str(),
            "note": self.note,
            "messageId": self.message_id,
            "createdAt": self.created_at,
            "summary": brief.map(|b| b.summary.as_str()),
            "intent": brief.map(|b| b.intent.as_str()),
            "sentiment": brief.map(|b| b.sentiment.as_str()),
            "sources": brief.map(|b| &b.sources),
            "briefMethod": brief.map(|b| b.method.as_str()),
            "briefAt": brief.map(|b| b.created_at),
        })
    }
}

impl TenantOwned for Conversation {
    const COLLECTION: &'static str = CONVERSATIONS;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageDirection {
    Inbound,
    Outbound,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SenderType {
    Customer,
    /// The AI agent (or the retrieval-only responder).
    Agent,
    /// A staff member.
    Human,
    System,
}

/// Inbound messages are `RECEIVED`. Outbound ones go `QUEUED → SENDING →
/// SENT → DELIVERED → READ`, or `FAILED` with the provider's error.
/// `DROPPED` is a bot reply discarded because a human took over first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageStatus {
    Received,
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Dropped,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Received => "RECEIVED",
            MessageStatus::Queued => "QUEUED",
            MessageStatus::Sending => "SENDING",
            MessageStatus::Sent => "SENT",
            MessageStatus::Delivered => "DELIVERED",
            MessageStatus::Read => "READ",
            MessageStatus::Failed => "FAILED",
            MessageStatus::Dropped => "DROPPED",
        }
    }

    /// Receipts only move a message forward (a late `delivered` must not
    /// undo `read`).
    pub fn rank(self) -> u8 {
        match self {
            MessageStatus::Received | MessageStatus::Queued | MessageStatus::Dropped => 0,
            MessageStatus::Sending => 1,
            MessageStatus::Sent => 2,
            MessageStatus::Delivered => 3,
            MessageStatus::Read => 4,
            MessageStatus::Failed => 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub conversation_id: String,
    pub channel_id: String,
    pub direction: MessageDirection,
    pub sender_type: SenderType,
    /// The staff user (HUMAN) or agent (AGENT) that wrote it.
    #[serde(default)]
    pub sender_id: Option<String>,
    pub content: String,
    pub status: MessageStatus,
    /// The provider's message id: inbound for deduplication (unique per
    /// channel), outbound once the provider accepted it.
    #[serde(default)]
    pub external_message_id: Option<String>,
    /// The provider's error when delivery failed.
    #[serde(default)]
    pub error: Option<String>,
    /// For bot replies: the inbound message answered. Unique per
    /// conversation, so a message is never answered twice.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Makes duplicates impossible (unique sparse index): `in:{channelId}:{externalMessageId}`
    /// for inbound messages, `reply:{inboundMessageId}` for bot replies.
    /// Absent (not null) otherwise, so the sparse index skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// Sources, token usage, `retrievalOnly`, `fallback` and the like.
    #[serde(default)]
    pub metadata: bson::Document,
    /// The LLM tokens spent writing this message (a bot reply), which the
    /// tenant's usage counts from here instead of from a `token_usage`
    /// entry: one write less per reply. Absent on every other message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_tokens: Option<i64>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for Message {
    const COLLECTION: &'static str = MESSAGES;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// A BSON document as plain JSON (dates as ISO strings, numbers as numbers).
fn doc_json(d: &bson::Document) -> serde_json::Value {
    bson::Bson::Document(d.clone()).into_relaxed_extjson()
}

impl MessageDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageDirection::Inbound => "INBOUND",
            MessageDirection::Outbound => "OUTBOUND",
        }
    }
}

impl SenderType {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderType::Customer => "CUSTOMER",
            SenderType::Agent => "AGENT",
            SenderType::Human => "HUMAN",
            SenderType::System => "SYSTEM",
        }
    }
}

impl Message {
    /// The JSON the api answers and realtime events carry: camelCase,
    /// string ids, ISO-8601 dates.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenantId": self.tenant_id.as_str(),
            "conversationId": self.conversation_id,
            "channelId": self.channel_id,
            "direction": self.direction.as_str(),
            "senderType": self.sender_type.as_str(),
            "senderId": self.sender_id,
            "content": self.content,
            "status": self.status.as_str(),
            "externalMessageId": self.external_message_id,
            "error": self.error,
            "replyTo": self.reply_to,
            "metadata": doc_json(&self.metadata),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

impl Conversation {
    /// The JSON the api answers and `conversation-updated` carries.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenantId": self.tenant_id.as_str(),
            "channelId": self.channel_id,
            "channelType": self.channel_type.as_str(),
            "agentId": self.agent_id,
            "contactId": self.contact_id,
            "externalUserId": self.external_user_id,
            "contactName": self.contact_name,
            "status": self.status.as_str(),
            "assignedTo": self.assigned_to,
            "lastMessagePreview": self.last_message_preview,
            "lastMessageAt": self.last_message_at,
            "unreadCount": self.unread_count,
            "messageCount": self.message_count,
            "resolvedAt": self.resolved_at,
            "handoff": self.handoff.as_ref().map(Handoff::view),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

impl Contact {
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "channelId": self.channel_id,
            "channelType": self.channel_type.as_str(),
            "externalId": self.external_id,
            "name": self.name,
            "username": self.username,
            "phone": self.phone,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

/// The dedup key of an inbound provider message.
pub fn inbound_dedup_key(channel_id: &str, external_message_id: &str) -> String {
    format!("in:{channel_id}:{external_message_id}")
}

/// The dedup key of the bot's reply to an inbound message.
pub fn reply_dedup_key(inbound_message_id: &str) -> String {
    format!("reply:{inbound_message_id}")
}

#[cfg(test)]
mod tests {
    use super::ConversationStatus::*;

    #[test]
    fn closed_is_final_and_resolved_only_reopens_or_closes() {
        for to in super::ConversationStatus::ALL {
            assert_eq!(Closed.can_move_to(to), to == Closed);
        }
        assert!(Resolved.can_move_to(Active));
        assert!(!Resolved.can_move_to(Assigned));
        assert!(Active.can_move_to(Assigned));
        assert!(Assigned.can_move_to(Active));
    }
}
