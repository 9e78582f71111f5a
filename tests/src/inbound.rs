//! Helpers for conversation tests: a channel stored directly, customer
//! messages delivered the way every webhook delivers them (a stored
//! `WebhookEvent` plus a `process_inbound` job), and job waiting.

use chrono::Utc;
use serde_json::Value;

use aigentable_jobs::types::ProcessInbound;
use aigentable_jobs::{JobClient, Requester};
use aigentable_platform::ids::{TenantId, new_id};
use aigentable_platform::model::webhook_event::{InboundItem, WebhookEvent};
use aigentable_platform::model::{Channel, ChannelStatus, ChannelType, Message, MessageStatus};

use crate::{Session, TestApp};

pub fn tenant(s: &Session) -> TenantId {
    TenantId::from_trusted(s.tenant_id.clone())
}

/// A website channel answered by `agent_id` (none: staff only).
pub async fn channel(app: &TestApp, s: &Session, name: &str, agent_id: Option<&str>) -> String {
    let now = Utc::now();
    let channel = Channel {
        id: new_id(),
        tenant_id: tenant(s),
        channel_type: ChannelType::Website,
        name: name.to_owned(),
        agent_id: agent_id.map(str::to_owned),
        is_active: true,
        config: bson::Document::new(),
        secrets: Default::default(),
        webhook_secret: None,
        public_key: Some(format!("pk_{}", new_id())),
        routing_key: None,
        status: ChannelStatus::Active,
        last_error: None,
        unverified_deliveries: 0,
        last_unverified_delivery_at: None,
        last_tested_at: None,
        created_at: now,
        updated_at: now,
    };
    app.platform
        .db
        .scoped::<Channel>(&tenant(s))
        .insert(&channel)
        .await
        .expect("channel stored");
    channel.id
}

/// A customer message item.
pub fn said(user: &str, external_message_id: &str, text: &str) -> InboundItem {
    InboundItem::Message {
        external_user_id: user.to_owned(),
        user_name: Some(format!("Customer {user}")),
        username: None,
        phone: None,
        external_message_id: external_message_id.to_owned(),
        text: text.to_owned(),
        sent_at: Some(Utc::now()),
    }
}

pub fn receipt(external_message_id: &str, status: MessageStatus) -> InboundItem {
    InboundItem::Receipt {
        external_message_id: external_message_id.to_owned(),
        status,
        error: None,
    }
}

/// Stores a webhook event for `channel_id` and queues its processing, as
/// the webhook routes do. Returns the event id and the job id.
pub async fn deliver(
    app: &TestApp,
    s: &Session,
    channel_id: &str,
    items: Vec<InboundItem>,
) -> (String, String) {
    let event = WebhookEvent {
        id: new_id(),
        tenant_id: tenant(s),
        channel_id: channel_id.to_owned(),
        channel_type: ChannelType::Website,
        items,
        raw: bson::doc! { "test": true },
        created_at: Utc::now(),
    };
    app.platform
        .db
        .scoped::<WebhookEvent>(&tenant(s))
        .insert(&event)
        .await
        .expect("event stored");
    let job = process(app, s, channel_id, &event.id).await;
    (event.id, job)
}

/// Queues (again) the processing of a stored event.
pub async fn process(app: &TestApp, s: &Session, channel_id: &str, event_id: &str) -> String {
    let client = JobClient::connect(&app.platform).await.expect("job client");
    client
        .enqueue(
            &tenant(s),
            Requester::System,
            ProcessInbound {
                channel_id: channel_id.to_owned(),
                event_id: event_id.to_owned(),
            },
        )
        .await
        .expect("job queued")
        .id
}

/// Waits for a job to finish and returns its record as the api shows it.
pub async fn finished(app: &TestApp, s: &Session, job_id: &str) -> Value {
    app.job_finished(s, job_id).await
}

/// A conversation's messages, oldest first, straight from the database.
pub async fn stored_messages(app: &TestApp, s: &Session, conversation_id: &str) -> Vec<Message> {
    let (mut messages, _) = app
        .platform
        .db
        .scoped::<Message>(&tenant(s))
        .find_page(
            bson::doc! { "conversationId": conversation_id },
            bson::doc! { "createdAt": 1, "_id": 1 },
            aigentable_platform::db::PageRequest {
                page: 1,
                limit: 100,
            },
        )
        .await
        .expect("messages");
    messages.sort_by_key(|m| m.created_at);
    messages
}

/// Every job of a type in the tenant, as stored.
pub async fn jobs_of_type(app: &TestApp, s: &Session, job_type: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/jobs?type={job_type}&limit=100"), s)
        .await;
    r.body["jobs"].as_array().cloned().unwrap_or_default()
}

/// Switches an agent on or off through the API.
pub async fn set_agent_active(app: &TestApp, s: &Session, agent: &str, on: bool) {
    let r = app
        .put(
            &format!("/api/v1/agents/{agent}"),
            s,
            serde_json::json!({ "isActive": on }),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{:?}", r.body);
    // The change reaches this process's cache (which the in-process
    // workers read) a moment after the write returned: a message sent
    // before that would still find the agent as it was.
    let tenant = TenantId::from_trusted(s.tenant_id.clone());
    let seen = app
        .eventually(std::time::Duration::from_secs(5), || async {
            let a = app
                .platform
                .live
                .agent(&app.platform.db, &tenant, agent)
                .await
                .ok()
                .flatten()?;
            (a.is_active == on).then_some(())
        })
        .await;
    assert!(seen.is_some(), "the agent's change reached the cache");
}
