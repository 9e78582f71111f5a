//! Live sessions follow the account: every way a session ends on the REST
//! side ends the matching Socket.IO sessions too, with a `session-revoked`
//! event naming the reason, on every api replica; socket actions re-check
//! the caller; suspended tenants' bots hold their work until reactivation.

use std::time::Duration;

use bson::doc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use aigentable_platform::auth::{TokenIssuer, revocation};
use aigentable_platform::ids::{TenantId, UserId};
use aigentable_platform::model::{Message, SenderType, WebhookEvent};
use aigentable_tests::inbound::{set_agent_active, stored_messages, tenant};
use aigentable_tests::socket::{TestSocket, connect};
use aigentable_tests::{Session, TestApp, spawn_app};

/// A dashboard socket for `s`, connected and past its handshake.
async fn dashboard(app: &TestApp, s: &Session) -> TestSocket {
    connect(
        &app.base,
        "/",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await
}

/// Waits for `session-revoked` with `reason`, then for the disconnect.
async fn assert_revoked(sock: &mut TestSocket, reason: &str) {
    let event = sock
        .next_named("session-revoked", 10)
        .await
        .unwrap_or_else(|| panic!("no session-revoked ({reason})"));
    assert_eq!(event["reason"], reason, "{event}");
    assert!(
        event["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{event}"
    );
    assert!(
        sock.next_named("close", 5).await.is_some(),
        "the server disconnects after session-revoked ({reason})"
    );
}

async fn assert_still_connected(sock: &mut TestSocket) {
    assert!(
        sock.next_named("session-revoked", 2).await.is_none(),
        "this session was not revoked"
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sock.client
        .emit_with_ack(
            "join-conversation",
            json!("65a1b2c3d4e5f6a7b8c9d0e1"),
            Duration::from_secs(5),
            move |payload: rust_socketio::Payload, _c| {
                let _ = tx.send(format!("{payload:?}"));
                futures::FutureExt::boxed(async {})
            },
        )
        .await
        .expect("emit");
    let ack = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(ack.contains("conversation not found"), "answered: {ack}");
}

#[tokio::test]
async fn logout_disconnects_that_sessions_socket_only() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let second = app.login(&admin.email, &admin.password).await;
    let other_session = Session {
        token: second.body["token"].as_str().unwrap_or_default().to_owned(),
        ..admin.clone()
    };
    let mut sock = dashboard(&app, &admin).await;
    let mut other = dashboard(&app, &other_session).await;

    let r = app.post("/api/v1/auth/logout", &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_revoked(&mut sock, "logged-out").await;
    assert_still_connected(&mut other).await;
    app.cleanup().await;
}

#[tokio::test]
async fn password_role_status_and_deletion_changes_disconnect_the_user() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;

    // Own password change.
    let member = app.add_user(&admin, "TENANT_USER").await;
    let mut sock = dashboard(&app, &member).await;
    let mut admins_sock = dashboard(&app, &admin).await;
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &member,
            json!({ "password": "freshPassword77", "currentPassword": member.password }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut sock, "password-changed").await;

    // Deactivation by an admin.
    let member = app.add_user(&admin, "TENANT_USER").await;
    let mut sock = dashboard(&app, &member).await;
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &admin,
            json!({ "status": "INACTIVE" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut sock, "account-deactivated").await;

    // Demotion.
    let other_admin = app.add_user(&admin, "TENANT_ADMIN").await;
    let mut sock = dashboard(&app, &other_admin).await;
    let r = app
        .put(
            &format!("/api/v1/users/{}", other_admin.user_id),
            &admin,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut sock, "role-changed").await;

    // Deletion.
    let member = app.add_user(&admin, "TENANT_USER").await;
    let mut sock = dashboard(&app, &member).await;
    let r = app
        .delete(&format!("/api/v1/users/{}", member.user_id), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_revoked(&mut sock, "account-deleted").await;

    // None of that touched the admin's own session.
    assert_still_connected(&mut admins_sock).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_password_reset_disconnects_the_user() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let mut sock = dashboard(&app, &s).await;
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": s.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let outbox = app.platform.db.unscoped::<bson::Document>("outbox");
    let email = app
        .eventually(Duration::from_secs(15), || async {
            outbox
                .find_one(doc! { "to": &s.email, "status": "LOGGED" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the reset email reaches the dev outbox");
    let text = email.get_str("text").unwrap_or_default().to_owned();
    let token = text
        .split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a reset link");
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/reset-password",
            None,
            Some(json!({ "token": token, "password": "brandNewPass99" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut sock, "password-changed").await;
    app.cleanup().await;
}

#[tokio::test]
async fn suspending_a_tenant_disconnects_its_users_but_not_platform_admins() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let bystander = app.register("Other").await;
    let root = app.super_admin(&admin).await;
    let mut sock = dashboard(&app, &admin).await;
    let mut roots = dashboard(&app, &root).await;
    let mut others = dashboard(&app, &bystander).await;

    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &root,
            json!({ "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut sock, "tenant-suspended").await;
    assert_still_connected(&mut roots).await;
    assert_still_connected(&mut others).await;
    // And it cannot come back while suspended.
    let mut again = connect(
        &app.base,
        "/",
        json!({ "token": admin.token, "tenantId": admin.tenant_id }),
    )
    .await;
    let err = again.next_named("error", 5).await.expect("refused");
    assert!(err.to_string().contains("suspended"), "{err}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_logout_on_one_replica_disconnects_the_socket_on_another() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let s = app.register("Acme").await;
    let mut on_replica = dashboard(&replica, &s).await;
    let r = app.post("/api/v1/auth/logout", &s, json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_revoked(&mut on_replica, "logged-out").await;

    // And the other way round, for a user removed on the replica.
    let member = app.add_user(&s_fresh(&app, &s).await, "TENANT_USER").await;
    let mut on_first = dashboard(&app, &member).await;
    let admin = s_fresh(&app, &s).await;
    let r = replica
        .delete(&format!("/api/v1/users/{}", member.user_id), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_revoked(&mut on_first, "account-deleted").await;
    drop(replica);
    app.cleanup().await;
}

/// A new session for the same account (the test logged the old one out).
async fn s_fresh(app: &TestApp, s: &Session) -> Session {
    let login = app.login(&s.email, &s.password).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        ..s.clone()
    }
}

#[tokio::test]
async fn an_expiring_token_disconnects_its_socket() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    // The same signing configuration with a three-second lifetime.
    let mut jwt = app.platform.config.jwt.clone();
    jwt.ttl_seconds = 3;
    let (short, _) = TokenIssuer::new(&jwt)
        .issue(
            &UserId::from_trusted(s.user_id.clone()),
            &TenantId::from_trusted(s.tenant_id.clone()),
            aigentable_platform::domain::Role::TenantAdmin,
        )
        .expect("token");
    let short = Session {
        token: short,
        ..s.clone()
    };
    let mut sock = dashboard(&app, &short).await;
    let mut long = dashboard(&app, &s).await;
    let event = sock
        .next_named("session-revoked", 10)
        .await
        .expect("the socket is told when its token expires");
    assert_eq!(event["reason"], "expired");
    assert!(sock.next_named("close", 5).await.is_some());
    assert_still_connected(&mut long).await;
    app.cleanup().await;
}

/// Without any broadcast (the revocation is written straight to Redis), the
/// next socket action finds the session revoked.
#[tokio::test]
async fn every_socket_action_rechecks_the_caller() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let mut sock = dashboard(&app, &s).await;
    let claims = app.platform.tokens.verify(&s.token).expect("claims");
    revocation::revoke(&app.platform.kv, &claims.jti, claims.exp)
        .await
        .expect("revoked");
    sock.client
        .emit(
            "send-message",
            json!({ "conversationId": "65a1b2c3d4e5f6a7b8c9d0e1", "message": "hi" }),
        )
        .await
        .expect("emit");
    assert_revoked(&mut sock, "logged-out").await;
    app.cleanup().await;
}

const SITE: &str = "https://shop.example.com";

/// A website channel answered by `agent` (or by staff), and a visitor's
/// session on it: the channel id, its public key and the visitor's token.
async fn widget_visitor(
    app: &TestApp,
    admin: &Session,
    agent: Option<&str>,
) -> (String, String, String) {
    let mut body =
        json!({"type": "WEBSITE", "name": "Site chat", "config": {"allowedOrigins": [SITE]}});
    if let Some(agent) = agent {
        body["agentId"] = json!(agent);
    }
    let created = app.post("/api/v1/channels", admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_owned();
    let key = created.body["publicKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = app
        .http
        .post(app.url(&format!("/api/v1/widget/{key}/sessions")))
        .header("Origin", SITE)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    let r = TestApp::reply(r).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap_or_default().to_owned();
    (id, key, token)
}

async fn visitor_socket(app: &TestApp, admin: &Session) -> (String, TestSocket) {
    let (id, _, token) = widget_visitor(app, admin, None).await;
    let mut sock = connect(&app.base, "/widget", json!({ "token": token })).await;
    // Any acknowledgement of `join` proves the connect handler ran (it
    // registers that listener after joining the channel's room).
    assert!(
        sock.join_widget_conversation(1).await.is_some(),
        "the visitor's socket was accepted"
    );
    (id, sock)
}

#[tokio::test]
async fn widget_sockets_end_when_their_channel_is_deactivated_or_deleted() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let (deactivated, mut first) = visitor_socket(&app, &admin).await;
    let (deleted, mut second) = visitor_socket(&app, &admin).await;

    let r = app
        .put(
            &format!("/api/v1/channels/{deactivated}"),
            &admin,
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_revoked(&mut first, "channel-disabled").await;
    assert!(
        second.next_named("session-revoked", 1).await.is_none(),
        "the other channel's visitor stays"
    );

    let r = app
        .delete(&format!("/api/v1/channels/{deleted}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_revoked(&mut second, "channel-disabled").await;
    app.cleanup().await;
}

fn answers(messages: &[Message]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m.sender_type, SenderType::Agent | SenderType::System))
        .count()
}

/// A reply asked for just as the tenant is suspended (its message stored
/// before): the unrecorded reply job hands it to a recorded
/// `generate_reply`, held while suspended, and the customer is answered on
/// reactivation.
#[tokio::test]
async fn a_reply_asked_for_while_suspended_is_held_until_reactivation() {
    use aigentable_jobs::types::AnswerMessage;
    use aigentable_workers::WorkerState;
    use aigentable_workers::runner::{Handle, JobContext};

    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let root = app.super_admin(&admin).await;
    let agent = aigentable_tests::fake_providers::create_agent(&app, &admin).await;
    let (_, key, token) = widget_visitor(&app, &admin, Some(&agent)).await;
    // Stored and not answered (the agent was off): the state of a message
    // whose reply is asked for as the tenant gets suspended.
    set_agent_active(&app, &admin, &agent, false).await;
    let r = app
        .http
        .post(app.url(&format!("/api/v1/widget/{key}/messages")))
        .header("Origin", SITE)
        .bearer_auth(&token)
        .json(&json!({"text": "Where is my parcel?", "clientMessageId": "parcel-0002"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(TestApp::reply(r).await.status, StatusCode::ACCEPTED);
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    let question = app
        .eventually(Duration::from_secs(20), || async {
            messages
                .find_one(doc! { "direction": "INBOUND" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the message is stored");
    app.unrecorded_job_ran::<AnswerMessage>(&format!("answer-{}", question.id))
        .await;
    set_agent_active(&app, &admin, &agent, true).await;
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &root,
            json!({ "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The announcement reaches this process's cache a moment after the
    // write returned.
    let suspended = app
        .eventually(Duration::from_secs(5), || async {
            let t = app
                .platform
                .live
                .tenant(&app.platform.db, &tenant(&admin))
                .await
                .ok()
                .flatten()?;
            (t.status == aigentable_platform::domain::TenantStatus::Suspended).then_some(())
        })
        .await;
    assert!(suspended.is_some(), "the cache learnt of the suspension");

    let ctx = JobContext {
        state: WorkerState::new(app.platform.clone()).expect("worker state"),
        job_id: format!("answer-{}", question.id),
        tenant_id: tenant(&admin),
        attempt: 1,
        resumed: false,
    };
    let result = AnswerMessage {
        agent_id: agent.clone(),
        conversation_id: question.conversation_id.clone(),
        message_id: question.id.clone(),
        conversation: None,
        fact: None,
    }
    .handle(ctx)
    .await
    .expect("handled");
    let held_by = result["heldBy"].as_str().unwrap_or_default().to_owned();
    assert!(!held_by.is_empty(), "{result}");
    let jobs = app.platform.db.unscoped::<bson::Document>("jobs");
    let held = app
        .eventually(Duration::from_secs(20), || async {
            jobs.find_one(
                doc! { "_id": &held_by, "status": "SUCCEEDED", "result.heldWhileSuspended": true },
            )
            .await
            .ok()
            .flatten()
        })
        .await;
    assert!(held.is_some(), "the recorded reply is held");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conversation = question.conversation_id.clone();
    let all = stored_messages(&app, &admin, &conversation).await;
    assert_eq!(answers(&all), 0, "{all:#?}");

    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &root,
            json!({ "status": "ACTIVE" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let answered = app
        .eventually(Duration::from_secs(40), || async {
            let n = answers(&stored_messages(&app, &admin, &conversation).await);
            (n > 0).then_some(n)
        })
        .await;
    assert_eq!(answered, Some(1), "answered once after reactivation");
    app.cleanup().await;
}

/// Through the widget, as a visitor would: the message is accepted and
/// stored while the tenant is suspended, its processing held (a recorded
/// `process_inbound` job marked held), and answered on reactivation.
#[tokio::test]
async fn a_suspended_tenants_bot_holds_inbound_messages_until_reactivation() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let root = app.super_admin(&admin).await;
    let agent = aigentable_tests::fake_providers::create_agent(&app, &admin).await;
    let (_, key, token) = widget_visitor(&app, &admin, Some(&agent)).await;

    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &root,
            json!({ "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = app
        .http
        .post(app.url(&format!("/api/v1/widget/{key}/messages")))
        .header("Origin", SITE)
        .bearer_auth(&token)
        .json(&json!({"text": "Where is my parcel?", "clientMessageId": "parcel-0001"}))
        .send()
        .await
        .expect("sent");
    let r = TestApp::reply(r).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let jobs = app.platform.db.unscoped::<bson::Document>("jobs");
    let held = app
        .eventually(Duration::from_secs(20), || async {
            jobs.find_one(doc! { "tenantId": &admin.tenant_id, "type": "process_inbound", "status": "SUCCEEDED" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the inbound job ran");
    let job_id = held.get_str("_id").unwrap_or_default().to_owned();
    let event_id = held
        .get_document("payload")
        .ok()
        .and_then(|p| p.get_str("eventId").ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        held.get_document("result")
            .ok()
            .and_then(|r| r.get_bool("heldWhileSuspended").ok()),
        Some(true),
        "{held:?}"
    );
    // Acknowledged and stored, not processed: no conversation, no reply.
    assert!(
        app.platform
            .db
            .scoped::<WebhookEvent>(&tenant(&admin))
            .find_by_id(&event_id)
            .await
            .ok()
            .flatten()
            .is_some()
    );
    let conversations = app.platform.db.unscoped::<bson::Document>("conversations");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        conversations
            .count_documents(doc! { "tenantId": &admin.tenant_id })
            .await
            .unwrap_or(99),
        0
    );
    assert_eq!(
        jobs.count_documents(doc! { "tenantId": &admin.tenant_id, "type": "generate_reply" })
            .await
            .unwrap_or(99),
        0,
        "no reply while suspended"
    );

    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &root,
            json!({ "status": "ACTIVE" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let answered: Option<Value> = app
        .eventually(Duration::from_secs(40), || async {
            let conv = conversations
                .find_one(doc! { "tenantId": &admin.tenant_id })
                .await
                .ok()
                .flatten()?;
            let id = conv.get_str("_id").ok()?.to_owned();
            let messages = stored_messages(&app, &admin, &id).await;
            (answers(&messages) > 0).then(|| json!({ "conversation": id }))
        })
        .await;
    assert!(answered.is_some(), "answered after reactivation");
    let first = jobs
        .find_one(doc! { "_id": &job_id })
        .await
        .ok()
        .flatten()
        .expect("job");
    assert!(
        first
            .get_document("result")
            .ok()
            .and_then(|r| r.get_bool("heldWhileSuspended").ok())
            .is_none(),
        "the held job itself ran again: {first:?}"
    );
    app.cleanup().await;
}
