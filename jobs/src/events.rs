//! Realtime events: workers publish them on Redis pub/sub and every api
//! replica relays them to its own Socket.IO clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use aigentable_platform::Kv;

/// Socket.IO event names the frontend listens to.
pub mod names {
    pub const JOB_UPDATED: &str = "job-updated";
    pub const DOCUMENT_UPDATED: &str = "document-updated";
    pub const NEW_MESSAGE: &str = "new-message";
    pub const CONVERSATION_UPDATED: &str = "conversation-updated";
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
    let payload = serde_json::to_string(event).unwrap_or_default();
    let mut conn = kv.conn();
    redis::cmd("PUBLISH")
        .arg(channel(kv.namespace()))
        .arg(payload)
        .query_async::<()>(&mut conn)
        .await
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
