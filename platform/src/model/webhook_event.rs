//! A verified webhook delivery (or widget visitor message), normalized.
//!
//! Every channel goes through the same inbound path: the webhook route (or
//! the widget endpoint) verifies the request, parses the provider payload
//! into [`InboundItem`]s, stores one `WebhookEvent` per channel and enqueues
//! `ProcessInbound { channel_id, event_id }`, which turns the items into
//! contacts, conversations and messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;
use crate::model::{ChannelType, MessageStatus};

pub const COLLECTION: &str = "webhook_events";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// What the payload said, for this channel only (a Meta delivery that
    /// carries entries for several channels is split per channel).
    pub items: Vec<InboundItem>,
    /// The provider payload as received, for audit and replays.
    #[serde(default)]
    pub raw: bson::Document,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
}

impl TenantOwned for WebhookEvent {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

/// One thing a provider told us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InboundItem {
    /// A customer wrote to us.
    #[serde(rename_all = "camelCase")]
    Message {
        /// The provider's id for the customer (wa_id, PSID, IGSID, Telegram
        /// chat id, widget visitor id): where replies go.
        external_user_id: String,
        /// Display name (WhatsApp profile name, Telegram first + last name).
        #[serde(default)]
        user_name: Option<String>,
        /// Handle (Telegram username).
        #[serde(default)]
        username: Option<String>,
        /// Phone number (WhatsApp).
        #[serde(default)]
        phone: Option<String>,
        /// The provider's message id (wamid, mid, Telegram update id, widget
        /// client message id): the dedup key.
        external_message_id: String,
        text: String,
        #[serde(default, with = "crate::model::bson_datetime_opt")]
        sent_at: Option<DateTime<Utc>>,
    },
    /// A delivery status for one of our outbound messages.
    #[serde(rename_all = "camelCase")]
    Receipt {
        external_message_id: String,
        /// `Sent`, `Delivered`, `Read` or `Failed`.
        status: MessageStatus,
        #[serde(default)]
        error: Option<String>,
    },
}

impl InboundItem {
    /// The provider id this item is deduplicated on.
    pub fn external_message_id(&self) -> &str {
        match self {
            InboundItem::Message {
                external_message_id,
                ..
            }
            | InboundItem::Receipt {
                external_message_id,
                ..
            } => external_message_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_through_bson_with_a_kind_tag() {
        let items = vec![
            InboundItem::Message {
                external_user_id: "5511".into(),
                user_name: Some("Ana".into()),
                username: None,
                phone: Some("5511".into()),
                external_message_id: "wamid.1".into(),
                text: "hi".into(),
                sent_at: Some(DateTime::from_timestamp(1_717_000_000, 0).unwrap_or_default()),
            },
            InboundItem::Receipt {
                external_message_id: "wamid.2".into(),
                status: MessageStatus::Read,
                error: None,
            },
        ];
        for item in items {
            let b = bson::to_bson(&item).expect("serialize");
            let d = b.as_document().expect("document").clone();
            assert!(d.get_str("kind").is_ok());
            let back: InboundItem = bson::from_bson(bson::Bson::Document(d)).expect("deserialize");
            assert_eq!(back, item);
        }
    }
}
