//! Conversations through the api: customer messages arriving as webhook
//! events (processed exactly once), receipts, lists with filters, the
//! status machine, assignment, staff messages over HTTP and the socket,
//! search, and agent deletion.

use std::time::Duration;

use aigentable_platform::model::webhook_event::InboundItem;
use aigentable_platform::model::{Channel, Contact, Conversation, MessageStatus};
use aigentable_tests::inbound::{
    channel, deliver, finished, process, receipt, said, stored_messages, tenant,
};
use aigentable_tests::socket::connect;
use aigentable_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn inbound_messages_are_stored_once_with_contacts_and_conversations() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let ch = channel(&app, &s, "Website chat", None).await;

    let (event_id, job) = deliver(
        &app,
        &s,
        &ch,
        vec![
            said("ana", "m1", "Hello, is anyone there?"),
            said("ana", "m2", "I need help with my order"),
            said("bob", "m3", "Do you ship to Spain?"),
        ],
    )
    .await;
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    assert_eq!(record["result"]["stored"], 3, "{record}");

    // The same event again (a replayed webhook): nothing new is stored.
    let again = process(&app, &s, &ch, &event_id).await;
    let record = finished(&app, &s, &again).await;
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    assert_eq!(record["result"]["stored"], 0, "{record}");
    assert_eq!(record["result"]["duplicates"], 3, "{record}");

    let t = tenant(&s);
    let db = &app.platform.db;
    assert_eq!(
        db.scoped::<Contact>(&t)
            .count(bson::doc! {})
            .await
            .unwrap_or(0),
        2
    );
    assert_eq!(
        db.scoped::<Conversation>(&t)
            .count(bson::doc! {})
            .await
            .unwrap_or(0),
        2
    );

    let r = app.get("/api/v1/conversations", &s).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["pagination"]["total"], 2);
    let list = r.body["conversations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ana = list
        .iter()
        .find(|c| c["externalUserId"] == "ana")
        .cloned()
        .expect("ana's conversation");
    // No agent on the channel: staff answer.
    assert_eq!(ana["status"], "WAITING");
    assert_eq!(ana["unreadCount"], 2);
    assert_eq!(ana["messageCount"], 2);
    assert_eq!(ana["lastMessagePreview"], "I need help with my order");
    assert_eq!(ana["contact"]["name"], "Customer ana");
    assert_eq!(ana["channel"]["id"], ch.as_str());
    assert_eq!(ana["channel"]["type"], "WEBSITE");
    assert_eq!(ana["channel"]["name"], "Website chat");
    assert!(ana["id"].as_str().is_some_and(|id| id.len() == 24));

    // Opening it shows the messages oldest first and marks them read.
    let id = ana["id"].as_str().unwrap_or_default().to_owned();
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let texts: Vec<&str> = r.body["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["content"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts,
        vec!["Hello, is anyone there?", "I need help with my order"]
    );
    assert_eq!(r.body["messages"][0]["direction"], "INBOUND");
    assert_eq!(r.body["messages"][0]["senderType"], "CUSTOMER");
    assert_eq!(r.body["unreadCount"], 0);
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["unreadCount"], 0);

    // Another tenant sees nothing of it.
    let other = app.register("Other").await;
    let r = app
        .get(&format!("/api/v1/conversations/{id}"), &other)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/api/v1/conversations", &other).await;
    assert_eq!(r.body["pagination"]["total"], 0);
    app.cleanup().await;
}

/// A customer's message as a provider sends it, with `name` as the
/// customer's profile name.
fn said_as(name: &str, user: &str, id: &str, text: &str) -> InboundItem {
    let mut item = said(user, id, text);
    if let InboundItem::Message { user_name, .. } = &mut item {
        *user_name = Some(name.to_owned());
    }
    item
}

/// A returning customer's contact is read and written only when the
/// profile their message gives differs from the one their last message
/// gave: a new name reaches the contact and the conversation list, while
/// the same profile again leaves the contact alone (here: a contact
/// changed directly in the database is not reverted by a message that
/// brings no news).
#[tokio::test]
async fn a_customers_changed_profile_reaches_their_contact() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let ch = channel(&app, &s, "Chat", None).await;
    let t = tenant(&s);
    let contacts = app.platform.db.scoped::<Contact>(&t);
    let contact = async || {
        contacts
            .find_one(bson::doc! { "externalId": "ana" })
            .await
            .ok()
            .flatten()
            .expect("ana's contact")
    };
    let says = async |item: InboundItem| {
        let (_, job) = deliver(&app, &s, &ch, vec![item]).await;
        let record = finished(&app, &s, &job).await;
        assert_eq!(record["result"]["stored"], 1, "{record}");
    };

    says(said_as("Ana", "ana", "p1", "hello")).await;
    assert_eq!(contact().await.name.as_deref(), Some("Ana"));
    says(said_as("Ana Souza", "ana", "p2", "it's me again")).await;
    assert_eq!(contact().await.name.as_deref(), Some("Ana Souza"));
    let r = app.get("/api/v1/conversations", &s).await;
    assert_eq!(r.body["conversations"][0]["contact"]["name"], "Ana Souza");
    assert_eq!(r.body["pagination"]["total"], 1, "one conversation");

    contacts
        .update_by_id(
            &contact().await.id,
            bson::doc! { "$set": { "name": "Edited elsewhere" } },
        )
        .await
        .expect("contact changed");
    says(said_as("Ana Souza", "ana", "p3", "still there?")).await;
    assert_eq!(
        contact().await.name.as_deref(),
        Some("Edited elsewhere"),
        "the unchanged profile did not touch the contact"
    );
    says(said_as("Ana S.", "ana", "p4", "new name")).await;
    assert_eq!(contact().await.name.as_deref(), Some("Ana S."));
    let stored = stored_messages(
        &app,
        &s,
        r.body["conversations"][0]["id"]
            .as_str()
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(stored.len(), 4, "every message in the one conversation");
    app.cleanup().await;
}

#[tokio::test]
async fn receipts_only_move_messages_forward() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let ch = channel(&app, &s, "Chat", None).await;
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m1", "hi")]).await;
    finished(&app, &s, &job).await;
    let r = app.get("/api/v1/conversations", &s).await;
    let id = r.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            &s,
            json!({ "content": "Hello Ana" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let message_id = r.body["message"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // As if the provider had accepted it.
    app.platform
        .db
        .scoped::<aigentable_platform::model::Message>(&tenant(&s))
        .update_by_id(
            &message_id,
            bson::doc! { "$set": { "externalMessageId": "wamid.out1", "status": "SENT" } },
        )
        .await
        .expect("update");

    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![receipt("wamid.out1", MessageStatus::Read)],
    )
    .await;
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["result"]["receipts"], 1, "{record}");
    // A late "delivered" does not undo "read".
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![receipt("wamid.out1", MessageStatus::Delivered)],
    )
    .await;
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["result"]["receipts"], 0, "{record}");
    let messages = stored_messages(&app, &s, &id).await;
    let out = messages
        .iter()
        .find(|m| m.id == message_id)
        .expect("the staff message");
    assert_eq!(out.status, MessageStatus::Read);
    app.cleanup().await;
}

#[tokio::test]
async fn status_machine_assignment_and_reopening() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let ch = channel(&app, &s, "Chat", None).await;
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m1", "hi")]).await;
    finished(&app, &s, &job).await;
    let r = app.get("/api/v1/conversations", &s).await;
    let id = r.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let status = |v: &'static str| json!({ "status": v });
    let path = format!("/api/v1/conversations/{id}/status");

    let r = app.put(&path, &s, json!({ "status": "SLEEPING" })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "status", "{:?}", r.body);

    // Assignment: a user of the tenant only.
    let member = app.add_user(&s, "TENANT_USER").await;
    let other = app.register("Other").await;
    let assign = format!("/api/v1/conversations/{id}/assign");
    let r = app
        .put(&assign, &s, json!({ "userId": other.user_id }))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app.put(&assign, &s, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = app
        .put(&assign, &s, json!({ "userId": member.user_id }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "ASSIGNED");
    assert_eq!(r.body["assignedTo"], member.user_id.as_str());
    let r = app.put(&assign, &s, json!({ "userId": null })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "ACTIVE");
    assert!(r.body["assignedTo"].is_null());
    // Taken from the bot by staff: the handoff says so; back to the bot, it
    // is cleared.
    let r = app
        .put(&assign, &s, json!({ "userId": member.user_id }))
        .await;
    assert_eq!(
        r.body["handoff"]["reason"], "staff_takeover",
        "{:?}",
        r.body
    );
    let r = app.put(&assign, &s, json!({ "userId": null })).await;
    assert!(r.body["handoff"].is_null(), "{:?}", r.body);

    let r = app.put(&path, &s, status("RESOLVED")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "RESOLVED");
    assert!(r.body["resolvedAt"].is_string());
    let r = app.put(&path, &s, status("ASSIGNED")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.message().contains("RESOLVED") && r.message().contains("ASSIGNED"),
        "{}",
        r.message()
    );

    // The customer's next message reopens a resolved conversation.
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m2", "one more thing")]).await;
    finished(&app, &s, &job).await;
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["status"], "ACTIVE", "{:?}", r.body);
    assert_eq!(r.body["messages"].as_array().map(Vec::len), Some(2));

    let r = app.put(&path, &s, status("CLOSED")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.put(&path, &s, status("ACTIVE")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.message().contains("CLOSED"), "{}", r.message());
    // Closed is final: the next message starts a new conversation.
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m3", "hello again")]).await;
    finished(&app, &s, &job).await;
    let r = app.get("/api/v1/conversations", &s).await;
    assert_eq!(r.body["pagination"]["total"], 2);
    let r = app
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            &s,
            json!({ "content": "too late" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    app.cleanup().await;
}

#[tokio::test]
async fn lists_filter_paginate_and_search() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let web = channel(&app, &s, "Web", None).await;
    let shop = channel(&app, &s, "Shop", None).await;
    for (ch, user, text) in [
        (&web, "u1", "Where is my parcel?"),
        (&web, "u2", "Opening hours please"),
        (&shop, "u3", "Is the blue kettle in stock?"),
    ] {
        let (_, job) = deliver(&app, &s, ch, vec![said(user, &format!("{user}-1"), text)]).await;
        finished(&app, &s, &job).await;
    }
    let r = app
        .get(&format!("/api/v1/conversations?channelId={web}"), &s)
        .await;
    assert_eq!(r.body["pagination"]["total"], 2, "{:?}", r.body);
    let r = app.get("/api/v1/conversations?limit=2&page=2", &s).await;
    assert_eq!(r.body["pagination"]["total"], 3);
    assert_eq!(r.body["pagination"]["pages"], 2);
    assert_eq!(r.body["conversations"].as_array().map(Vec::len), Some(1));
    let r = app.get("/api/v1/conversations?status=waiting", &s).await;
    assert_eq!(r.body["pagination"]["total"], 3);
    let r = app.get("/api/v1/conversations?status=CLOSED", &s).await;
    assert_eq!(r.body["pagination"]["total"], 0);
    let r = app.get("/api/v1/conversations?status=NOPE", &s).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/api/v1/conversations?search=kettle", &s).await;
    assert_eq!(r.body["pagination"]["total"], 1);
    let r = app
        .get("/api/v1/conversations?startDate=2999-01-01", &s)
        .await;
    assert_eq!(r.body["pagination"]["total"], 0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let r = app
        .get(
            &format!("/api/v1/conversations?startDate={today}&endDate={today}"),
            &s,
        )
        .await;
    assert_eq!(r.body["pagination"]["total"], 3, "{:?}", r.body);
    let r = app
        .get("/api/v1/conversations?startDate=yesterday", &s)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "startDate");

    // Search over message text.
    let r = app.get("/api/v1/search/conversations?q=PARCEL", &s).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["pagination"]["total"], 1);
    assert_eq!(r.body["conversations"][0]["externalUserId"], "u1");
    assert_eq!(
        r.body["conversations"][0]["match"]["content"],
        "Where is my parcel?"
    );
    let r = app.get("/api/v1/search/conversations?q=(.*", &s).await;
    assert_eq!(r.status, StatusCode::OK, "regex characters are literal");
    assert_eq!(r.body["pagination"]["total"], 0);
    let r = app.get("/api/v1/search/conversations", &s).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Documented in the OpenAPI spec.
    let spec = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("spec");
    let spec: serde_json::Value = spec.json().await.unwrap_or_default();
    for path in [
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/messages",
        "/api/v1/conversations/{id}/assign",
        "/api/v1/conversations/{id}/status",
        "/api/v1/search/conversations",
        "/api/v1/agents/{id}/test",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    app.cleanup().await;
}

/// The acknowledgement's value (socket.io clients see the acked arguments
/// as a list).
fn ack_value(payload: rust_socketio::Payload) -> serde_json::Value {
    let mut value = match payload {
        rust_socketio::Payload::Text(mut v) if !v.is_empty() => v.swap_remove(0),
        other => panic!("unexpected ack {other:?}"),
    };
    while let serde_json::Value::Array(mut inner) = value {
        value = if inner.is_empty() {
            serde_json::Value::Null
        } else {
            inner.swap_remove(0)
        };
    }
    value
}

#[tokio::test]
async fn staff_messages_over_http_and_socket_reach_the_browsers() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let ch = channel(&app, &s, "Chat", None).await;
    let mut sock = connect(
        &app.base,
        "/api/v1",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m1", "anyone?")]).await;
    finished(&app, &s, &job).await;
    let event = sock
        .next_named("new-message", 10)
        .await
        .expect("new-message for the customer message");
    assert_eq!(event["content"], "anyone?");
    assert_eq!(event["senderType"], "CUSTOMER");
    let id = event["conversationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event = sock
        .next_named("conversation-updated", 10)
        .await
        .expect("conversation-updated");
    assert_eq!(event["id"], id.as_str());

    let path = format!("/api/v1/conversations/{id}/messages");
    let r = app.post(&path, &s, json!({ "content": "   " })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post(&path, &s, json!({ "message": "We are here!" }))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["message"]["senderType"], "HUMAN");
    assert_eq!(r.body["message"]["direction"], "OUTBOUND");
    assert_eq!(r.body["message"]["senderId"], s.user_id.as_str());
    assert!(r.body["jobId"].as_str().is_some_and(|j| j.len() == 24));

    // The socket's send-message does the same and acknowledges.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sock.client
        .emit_with_ack(
            "send-message",
            json!({ "conversationId": id, "message": { "content": "Sent from the socket" } }),
            Duration::from_secs(10),
            move |payload: rust_socketio::Payload, _c| {
                let tx = tx.clone();
                Box::pin(async move {
                    let _ = tx.send(payload);
                })
            },
        )
        .await
        .expect("emit");
    let ack = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("ack");
    let ack = ack_value(ack);
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["message"]["senderType"], "HUMAN");
    let stored = stored_messages(&app, &s, &id).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        vec!["anyone?", "We are here!", "Sent from the socket"]
    );

    // Unknown conversations are refused with a reason.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sock.client
        .emit_with_ack(
            "send-message",
            json!({ "conversationId": "65a1b2c3d4e5f6a7b8c9d0e1", "message": "hi" }),
            Duration::from_secs(10),
            move |payload: rust_socketio::Payload, _c| {
                let tx = tx.clone();
                Box::pin(async move {
                    let _ = tx.send(payload);
                })
            },
        )
        .await
        .expect("emit");
    let ack = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("ack");
    let ack = ack_value(ack);
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["code"], "NOT_FOUND");
    app.cleanup().await;
}

#[tokio::test]
async fn deleting_an_agent_purges_its_documents_and_detaches_its_channels() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    // An inactive agent: the conversation is the agent's, but no reply runs.
    let r = app
        .post(
            "/api/v1/agents",
            &s,
            json!({ "name": "Support", "isActive": true }),
        )
        .await;
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    app.upload_text(&s, "hours.txt", "Our shop opens at nine.", Some(&agent))
        .await;
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m1", "hello")]).await;
    finished(&app, &s, &job).await;
    // Let the reply (if any) settle so the conversation is in a stable state.
    let conversation = app
        .eventually(Duration::from_secs(20), || async {
            let r = app.get("/api/v1/conversations", &s).await;
            let c = r.body["conversations"][0].clone();
            (c["agentId"] == agent.as_str()).then_some(c)
        })
        .await
        .expect("the agent's conversation");
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();

    let r = app.delete(&format!("/api/v1/agents/{agent}"), &s).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);

    let t = tenant(&s);
    let stored = app
        .platform
        .db
        .scoped::<Channel>(&t)
        .find_by_id(&ch)
        .await
        .ok()
        .flatten()
        .expect("channel kept");
    assert_eq!(stored.agent_id, None, "the channel is detached");
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert!(r.body["agentId"].is_null(), "{:?}", r.body);
    assert_ne!(r.body["status"], "ACTIVE", "staff own it now");
    // The document is purged.
    let gone = app
        .eventually(Duration::from_secs(30), || async {
            let r = app.get("/api/v1/documents", &s).await;
            (r.body["pagination"]["total"] == 0).then_some(())
        })
        .await;
    assert!(gone.is_some(), "the agent's documents are purged");
    app.cleanup().await;
}
