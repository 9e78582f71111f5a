use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use aigentable_platform::model::{ChannelType, InboundItem};

use crate::{Job, Queue};

/// A verified webhook delivery on its way in: the api queues it with its
/// items, in one Redis round trip and with no database write (see
/// [`crate::JobClient::enqueue_fresh`]); the worker stores it as a
/// `WebhookEvent` and processes it. No job record: Redis holds it until
/// then, and a tenant's suspension hands it on as a recorded
/// `process_inbound` job, which holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveInbound {
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// Id of the `WebhookEvent` the worker stores.
    pub event_id: String,
    /// The provider payload as received, for this channel: its text, which
    /// the api passes on unparsed when the delivery is this channel's alone
    /// and the worker reads into the stored event.
    pub raw: Box<serde_json::value::RawValue>,
    pub received_at: DateTime<Utc>,
    /// Only the items no earlier delivery carried (the queue script drops
    /// the others and writes these in; left out while empty, as
    /// [`crate::JobClient::enqueue_fresh`] requires).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<InboundItem>,
}

impl ReceiveInbound {
    /// A provider id seen within this window is not queued again: a
    /// retried delivery enqueues nothing new.
    pub const DEDUP_TTL: Duration = Duration::from_secs(48 * 3600);
}

impl Job for ReceiveInbound {
    const NAME: &'static str = "receive_inbound";
    const QUEUE: Queue = Queue::Inbound;
    /// Redis is the only copy until the event is stored: enough attempts to
    /// ride out a MongoDB outage of several minutes.
    const MAX_ATTEMPTS: u32 = 12;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const RECORDED: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigentable_platform::model::MessageStatus;

    #[test]
    fn a_queued_delivery_reads_back_as_sent() {
        let job = ReceiveInbound {
            channel_id: "c1".into(),
            channel_type: ChannelType::Whatsapp,
            event_id: "e1".into(),
            raw: serde_json::value::to_raw_value(
                &serde_json::json!({"object": "whatsapp_business_account"}),
            )
            .expect("raw"),
            received_at: DateTime::from_timestamp(1_717_000_001, 5_000_000).unwrap_or_default(),
            items: vec![
                InboundItem::Message {
                    external_user_id: "5511".into(),
                    user_name: Some("Ana".into()),
                    username: None,
                    phone: None,
                    external_message_id: "wamid.1".into(),
                    text: "hi".into(),
                    sent_at: DateTime::from_timestamp(1_717_000_000, 0),
                },
                InboundItem::Receipt {
                    external_message_id: "wamid.2".into(),
                    status: MessageStatus::Read,
                    error: None,
                },
            ],
        };
        let json = serde_json::to_vec(&job).expect("encoded");
        let back: ReceiveInbound = serde_json::from_slice(&json).expect("decoded");
        assert_eq!(back.items, job.items);
        assert_eq!(back.raw.get(), job.raw.get());
        assert_eq!(back.received_at, job.received_at);
        assert_eq!(serde_json::to_vec(&back).expect("encoded again"), json);
    }
}
