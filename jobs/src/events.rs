//! Realtime events: workers publish them on Redis pub/sub and every api
//! replica relays them to its own Socket.IO clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use aigentable_platform::Kv;

/// Socket.IO event names the frontend listens to.
pub mod names {
    pub const JOB_UPDATED: &str = "job-updated";
    pub const DOCUMENT_UPDATED: &str = "document-updated";
    pub const AGENT_UPDATED: &str = "agent-updated";
    pub const NEW_MESSAGE: &str = "new-message";
    pub const CONVERSATION_UPDATED: &str = "conversation-updated";
    pub const MESSAGE_UPDATED: &str = "message-updated";
    pub const CHANNEL_UPDATED: &str = "channel-updated";
    /// `{conversationId, messageId, delta, index}`: text of a reply being
    /// written; only the conversation's room (and its widget visitor) gets
    /// it. `dropped: true` ends a text that will not become a message.
    pub const MESSAGE_DELTA: &str = "message-delta";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeEvent {
    pub tenant_id: String,
    /// When set, only sockets that joined this conversation get it (besides
    /// the tenant room, which always gets it).
    #[serde(default)]
    pub conversation_id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub fn channel(namespace: &str) -> String {
    format!("{namespace}:events")
}

pub async fn publish(kv: &Kv, event: &RealtimeEvent) -> redis::RedisResult<()> {
    publish_all(kv, std::slice::from_ref(event)).await
}

/// Publishes `events` in order, in one round trip to Redis.
pub async fn publish_all(kv: &Kv, events: &[RealtimeEvent]) -> redis::RedisResult<()> {
    let channel = channel(kv.namespace());
    let mut pipe = redis::pipe();
    for event in events {
        pipe.cmd("PUBLISH")
            .arg(&channel)
            .arg(serde_json::to_string(event).unwrap_or_default())
            .ignore();
    }
    pipe.query_async::<()>(&mut kv.conn()).await
}

/// Tells a tenant's browsers that a knowledge document changed. The api and
/// the workers both announce changes, with the same payload.
pub async fn document_updated(kv: &Kv, document: &aigentable_platform::model::KnowledgeDocument) {
    let event = RealtimeEvent {
        tenant_id: document.tenant_id.to_string(),
        conversation_id: None,
        event: names::DOCUMENT_UPDATED.to_owned(),
        data: document.event_payload(),
    };
    if let Err(e) = publish(kv, &event).await {
        tracing::warn!(document_id = %document.id, error = %e, "could not publish document event");
    }
}

/// `channel-updated`: a channel's status or setup changed (`data` from
/// `platform::channels::setup::event_payload`, no secrets).
pub async fn channel_updated(kv: &Kv, tenant_id: &str, channel_id: &str, data: Value) {
    let event = RealtimeEvent {
        tenant_id: tenant_id.to_owned(),
        conversation_id: None,
        event: names::CHANNEL_UPDATED.to_owned(),
        data,
    };
    if let Err(e) = publish(kv, &event).await {
        tracing::warn!(tenant_id = %tenant_id, channel_id = %channel_id, error = %e, "could not publish channel event");
    }
}

/// An event for the tenant room and the conversation's room.
fn conversation_event(
    tenant_id: &str,
    conversation_id: &str,
    name: &str,
    data: Value,
) -> RealtimeEvent {
    RealtimeEvent {
        tenant_id: tenant_id.to_owned(),
        conversation_id: Some(conversation_id.to_owned()),
        event: name.to_owned(),
        data,
    }
}

fn message_event(message: &aigentable_platform::model::Message, name: &str) -> RealtimeEvent {
    conversation_event(
        message.tenant_id.as_str(),
        &message.conversation_id,
        name,
        message.view(),
    )
}

fn conversation_updated_event(
    conversation: &aigentable_platform::model::Conversation,
) -> RealtimeEvent {
    conversation_event(
        conversation.tenant_id.as_str(),
        &conversation.id,
        names::CONVERSATION_UPDATED,
        conversation.view(),
    )
}

/// Publishes conversation events in one round trip; a failure is logged,
/// never fatal: the stored state is the truth, events are a hint.
async fn publish_hints(kv: &Kv, events: &[RealtimeEvent]) {
    if let Err(e) = publish_all(kv, events).await {
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        let first = events.first();
        tracing::warn!(
            tenant_id = first.map_or("", |e| e.tenant_id.as_str()),
            conversation_id = first.and_then(|e| e.conversation_id.as_deref()).unwrap_or(""),
            events = ?names,
            error = %e,
            "could not publish conversation event"
        );
    }
}

/// `new-message` for `message`, then `conversation-updated` for the
/// conversation it was noted on, in one round trip (a customer's message
/// costs every process a few Redis round trips; this is one of them).
pub async fn new_message_in(
    kv: &Kv,
    message: &aigentable_platform::model::Message,
    conversation: &aigentable_platform::model::Conversation,
) {
    publish_hints(
        kv,
        &[
            message_event(message, names::NEW_MESSAGE),
            conversation_updated_event(conversation),
        ],
    )
    .await;
}

/// `new-message`: a message was stored in a conversation.
pub async fn new_message(kv: &Kv, message: &aigentable_platform::model::Message) {
    publish_hints(kv, &[message_event(message, names::NEW_MESSAGE)]).await;
}

/// `message-updated`: a message's delivery status changed.
pub async fn message_updated(kv: &Kv, message: &aigentable_platform::model::Message) {
    publish_hints(kv, &[message_event(message, names::MESSAGE_UPDATED)]).await;
}

/// `conversation-updated`: status, assignment, counters or last message changed.
pub async fn conversation_updated(
    kv: &Kv,
    conversation: &aigentable_platform::model::Conversation,
) {
    publish_hints(kv, &[conversation_updated_event(conversation)]).await;
}
