//! Stored documents and their repositories.

pub mod agent;
pub mod ai_provider;
pub mod channel;
pub mod conversation;
pub mod document;
pub mod email_verification;
pub mod eval;
pub mod password_reset;
pub mod tenant;
pub mod user;
pub mod webhook_event;

pub use agent::{Agent, AgentStatus, RetrievalSettings};
pub use ai_provider::{AiProvider, AiProviderType};
pub use channel::{Channel, ChannelStatus, ChannelType};
pub use conversation::{
    Contact, Conversation, ConversationStatus, Message, MessageDirection, MessageStatus, SenderType,
};
pub use document::{DocumentStatus, KnowledgeDocument};
pub use email_verification::EmailVerification;
pub use password_reset::PasswordReset;
pub use tenant::{Tenant, TenantSettings};
pub use user::User;
pub use webhook_event::{InboundItem, WebhookEvent};

/// Serde helper for timestamps: BSON dates in MongoDB, so that TTL indexes
/// and range queries work, and `DateTime<Utc>` in Rust.
pub mod bson_datetime {
    pub use bson::serde_helpers::chrono_datetime_as_bson_datetime::{deserialize, serialize};
}

pub mod bson_datetime_opt {
    use bson::DateTime as BsonDateTime;
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(BsonDateTime::from_chrono).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<BsonDateTime>::deserialize(d)?.map(BsonDateTime::to_chrono))
    }
}
