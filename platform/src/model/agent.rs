use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const COLLECTION: &str = "agents";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    Active,
    Inactive,
    Training,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "ACTIVE",
            AgentStatus::Inactive => "INACTIVE",
            AgentStatus::Training => "TRAINING",
        }
    }
}

/// How many passages a reply draws on, and how relevant they must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalSettings {
    pub top_k: u32,
    /// Minimum fused relevance score, 0 to 1; 0 keeps everything.
    pub score_threshold: f64,
}

impl Default for RetrievalSettings {
    fn default() -> Self {
        Self {
            top_k: 5,
            score_threshold: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: String,
    pub personality: String,
    pub instructions: String,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub category: String,
    pub is_active: bool,
    pub status: AgentStatus,
    pub welcome_message: String,
    /// Sent to the customer when no answer can be given; the conversation
    /// then goes to a human.
    pub fallback_message: String,
    #[serde(default)]
    pub retrieval: RetrievalSettings,
    /// The AI provider to answer with; `None` uses the tenant's default (or
    /// the retrieval-only responder when the tenant has none).
    #[serde(default)]
    pub ai_provider_id: Option<String>,
    pub created_by: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for Agent {
    const COLLECTION: &'static str = COLLECTION;
    const LIVE_CONFIG: bool = true;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

pub const DEFAULT_WELCOME: &str = "Hi! How can I help you today?";
pub const DEFAULT_FALLBACK: &str =
    "I'm not sure about that one. Let me connect you with someone from our team.";
