//! Messaging channels: where customers talk to an agent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const COLLECTION: &str = "channels";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelType {
    Whatsapp,
    Facebook,
    Instagram,
    Telegram,
    Website,
}

impl ChannelType {
    pub const ALL: [ChannelType; 5] = [
        ChannelType::Whatsapp,
        ChannelType::Facebook,
        ChannelType::Instagram,
        ChannelType::Telegram,
        ChannelType::Website,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Whatsapp => "WHATSAPP",
            ChannelType::Facebook => "FACEBOOK",
            ChannelType::Instagram => "INSTAGRAM",
            ChannelType::Telegram => "TELEGRAM",
            ChannelType::Website => "WEBSITE",
        }
    }
}

/// Where a channel stands on its way to live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelStatus {
    /// Something needed for traffic is missing (see the channel's `setup`).
    NeedsSetup,
    /// Complete, but the provider has not confirmed it yet (press Test).
    Pending,
    /// Confirmed by the provider (or a website widget): traffic flows.
    #[serde(alias = "CONNECTED")]
    Active,
    /// The provider refused; `lastError` has its words.
    Error,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::NeedsSetup => "NEEDS_SETUP",
            ChannelStatus::Pending => "PENDING",
            ChannelStatus::Active => "ACTIVE",
            ChannelStatus::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    pub name: String,
    /// The agent that answers; `None` leaves conversations to staff.
    #[serde(default)]
    pub agent_id: Option<String>,
    pub is_active: bool,
    /// Non-secret settings, per type (phone number id, page id, Instagram
    /// account id, allowed origins, API version, base URL...).
    #[serde(default)]
    pub config: bson::Document,
    /// Secret settings (access token, app secret, bot token), each
    /// encrypted with `SecretBox`; never returned unmasked.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// What the provider must send back to prove a webhook is ours: the
    /// Meta verify token or the Telegram secret token. Shown to admins so
    /// they can paste it into the provider's console.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// The website widget's public key (absent on other types: the unique
    /// sparse index skips missing fields, not nulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `routing_key(type, provider id)` of a Meta channel, set only once the
    /// provider confirmed that the channel's token owns that account (the
    /// unique sparse index keeps it unique across tenants). Webhooks are
    /// routed on it; a channel without it receives no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    pub status: ChannelStatus,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Meta deliveries refused because the channel has no app secret to
    /// verify them with: proof that Meta is calling, and what is missing.
    #[serde(default)]
    pub unverified_deliveries: u64,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub last_unverified_delivery_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub last_tested_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for Channel {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}
