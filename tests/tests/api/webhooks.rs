//! Provider webhooks: Meta's subscription check, signatures checked on the
//! raw body before anything is stored, routing by provider id (only ids the
//! provider confirmed to the channel's test), deliveries for a channel
//! without its app secret refused and counted, a flood of entries refused
//! at once while the api stays responsive, echoes and
//! bots ignored, duplicates collapsed, one `receive_inbound` job (and so
//! one stored event) per channel; and, through the conversation
//! engineer's inbound and reply handlers, the bot's reply delivered back to
//! the (fake) provider.

use std::time::Duration;

use bson::doc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use aigentable_jobs::JobClient;
use aigentable_jobs::types::AnswerMessage;
use aigentable_platform::db::Scoped;
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::{Contact, InboundItem, Message, MessageStatus, WebhookEvent};
use aigentable_scheduler::{Task, fire};
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake, create_agent, create_channel, create_live_channel, post_meta,
    test_channel, whatsapp_text,
};
use aigentable_tests::inbound::set_agent_active;
use aigentable_tests::{Session, TestApp};

fn tenant(s: &Session) -> TenantId {
    TenantId::from_trusted(s.tenant_id.clone())
}

/// The message `id` once `done` holds for it, read again until `within`
/// has passed (`None` then).
async fn message_once(
    app: &TestApp,
    messages: &Scoped<Message>,
    id: &str,
    within: Duration,
    done: impl Fn(&Message) -> bool,
) -> Option<Message> {
    app.eventually(within, || async {
        let m = messages.find_by_id(id).await.ok().flatten()?;
        done(&m).then_some(m)
    })
    .await
}

/// The texts of the WhatsApp messages the fake provider took at `path`.
fn texts_sent(fake: &FakeProviders, path: &str) -> Vec<String> {
    fake.requests_to(path)
        .iter()
        .map(|c| {
            c.body["text"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The events stored for this tenant once the workers have run what the
/// webhooks queued (the worker stores them).
async fn events(app: &TestApp, s: &Session) -> Vec<WebhookEvent> {
    let pending = app.settled_by_workers(Duration::from_secs(20)).await;
    assert!(pending.is_empty(), "the workers ran every job: {pending:?}");
    let (items, _) = app
        .platform
        .db
        .scoped::<WebhookEvent>(&tenant(s))
        .find_page(
            doc! {},
            doc! { "createdAt": 1, "_id": 1 },
            aigentable_platform::db::PageRequest {
                page: 1,
                limit: 100,
            },
        )
        .await
        .expect("events");
    items
}

/// The tenant's first bot reply, once it is stored as SENT.
async fn sent_reply(app: &TestApp, t: &TenantId) -> Message {
    let messages = app.platform.db.scoped::<Message>(t);
    app.eventually(Duration::from_secs(10), || async {
        messages
            .find_one(doc! { "direction": "OUTBOUND", "status": "SENT" })
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("reply stored as SENT")
}

async fn whatsapp_channel(app: &TestApp, s: &Session, pnid: &str, agent: Option<&str>) -> Value {
    let mut body = json!({
        "type": "WHATSAPP", "name": "WA",
        "config": {"phoneNumberId": pnid, "accessToken": "wa-token-0001", "appSecret": "wa-secret"}
    });
    if let Some(a) = agent {
        body["agentId"] = json!(a);
    }
    create_live_channel(app, s, body).await
}

#[tokio::test]
async fn meta_subscription_check_echoes_the_challenge_for_our_verify_token_only() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let wa = whatsapp_channel(&app, &admin, "PNV", None).await;
    let token = wa["verifyToken"].as_str().unwrap_or_default();
    let ok = app
        .http
        .get(app.url(&format!(
            "/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap_or_default(), "1158201444");
    let bad = app
        .http
        .get(app.url(
            "/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), StatusCode::FORBIDDEN);
    // A WhatsApp token is not a Messenger token.
    let cross = app
        .http
        .get(app.url(&format!(
            "/api/v1/webhooks/facebook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1"
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    app.cleanup().await;
}

#[tokio::test]
async fn signed_deliveries_are_stored_once_and_unsigned_ones_never() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let wa = whatsapp_channel(&app, &admin, "PN100", None).await;
    let body = whatsapp_text("PN100", "5511999990000", "wamid.AAA", "hi there");

    // Bad or missing signature: 401, nothing stored or queued.
    let r = post_meta(
        &app,
        "/api/v1/webhooks/whatsapp",
        &body,
        Some("not-the-secret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(events(&app, &admin).await.is_empty());

    // Unknown phone number id: 404.
    let other = whatsapp_text("PN-UNKNOWN", "1", "wamid.X", "x");
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &other, Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Signed: 200 EVENT_RECEIVED, one event, one job; five concurrent
    // copies of the same delivery add nothing.
    let sends =
        (0..5).map(|_| post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")));
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body, Value::String("EVENT_RECEIVED".to_owned()));
    }
    let stored = events(&app, &admin).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].channel_id, wa["id"].as_str().unwrap_or_default());
    assert_eq!(
        stored[0].items,
        vec![InboundItem::Message {
            external_user_id: "5511999990000".to_owned(),
            user_name: Some("Ana".to_owned()),
            username: None,
            phone: Some("5511999990000".to_owned()),
            external_message_id: "wamid.AAA".to_owned(),
            text: "hi there".to_owned(),
            sent_at: body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
        }]
    );
    // A delivery for one account is stored whole, as it was signed.
    assert_eq!(
        bson::Bson::Document(stored[0].raw.clone()).into_relaxed_extjson(),
        body
    );

    // Receipts are events too (and deduplicated per status).
    let receipt = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "PN100"},
        "statuses": [{"id": "wamid.OUT1", "status": "delivered", "timestamp": "1717000001", "recipient_id": "5511"}]}}]}]});
    let r = post_meta(
        &app,
        "/api/v1/webhooks/whatsapp",
        &receipt,
        Some("wa-secret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let stored = events(&app, &admin).await;
    assert_eq!(stored.len(), 2);
    assert!(matches!(
        &stored[1].items[0],
        InboundItem::Receipt {
            status: MessageStatus::Delivered,
            ..
        }
    ));
    app.cleanup().await;
}

#[tokio::test]
async fn messenger_and_instagram_route_per_entry_and_ignore_echoes() {
    let (app, fake) = app_with_fake(&[]).await;
    let a = app.register("A").await;
    let b = app.register("B").await;
    for page in ["PAGE_A", "PAGE_B", "PAGE_C"] {
        let token = format!("tok-{}", page.to_lowercase());
        fake.add_account(&token, json!({"id": page, "name": page}));
    }
    create_live_channel(&app, &a, json!({"type": "FACEBOOK", "name": "Page A", "config": {"pageId": "PAGE_A", "pageAccessToken": "tok-page_a", "appSecret": "meta-app"}})).await;
    create_live_channel(&app, &b, json!({"type": "FACEBOOK", "name": "Page B", "config": {"pageId": "PAGE_B", "pageAccessToken": "tok-page_b", "appSecret": "meta-app"}})).await;
    create_live_channel(&app, &a, json!({"type": "INSTAGRAM", "name": "IG", "config": {"instagramAccountId": "IG_A", "accessToken": "tok-ig", "appSecret": "ig-app"}})).await;

    // One delivery, two pages of two tenants: split per channel; the echo
    // of our own message is skipped.
    let body = json!({"object": "page", "entry": [
        {"id": "PAGE_A", "time": 1, "messaging": [
            {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE_A"}, "timestamp": 1718000000000u64, "message": {"mid": "m_1", "text": "hello A"}},
            {"sender": {"id": "PAGE_A"}, "recipient": {"id": "PSID1"}, "timestamp": 1718000000000u64, "message": {"mid": "m_echo", "text": "our reply", "is_echo": true}}]},
        {"id": "PAGE_B", "time": 1, "messaging": [
            {"sender": {"id": "PSID2"}, "recipient": {"id": "PAGE_B"}, "timestamp": 1718000000000u64, "message": {"mid": "m_2", "text": "hello B"}}]}]});
    let r = post_meta(&app, "/api/v1/webhooks/facebook", &body, Some("meta-app")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let ea = events(&app, &a).await;
    let eb = events(&app, &b).await;
    assert_eq!((ea.len(), eb.len()), (1, 1));
    assert_eq!(ea[0].items.len(), 1, "the echo is ignored");
    assert_eq!(ea[0].items[0].external_message_id(), "m_1");
    assert_eq!(eb[0].items[0].external_message_id(), "m_2");
    // Each tenant keeps only its own part of the raw payload.
    let raw_b =
        serde_json::to_string(&bson::Bson::Document(eb[0].raw.clone()).into_relaxed_extjson())
            .unwrap_or_default();
    assert!(
        raw_b.contains("hello B") && !raw_b.contains("hello A"),
        "{raw_b}"
    );

    // A delivery signed with one app's secret speaks only for that app's
    // channels: the page with another app secret gets nothing.
    create_live_channel(&app, &b, json!({"type": "FACEBOOK", "name": "Page C", "config": {"pageId": "PAGE_C", "pageAccessToken": "tok-page_c", "appSecret": "other-app"}})).await;
    let mixed = json!({"object": "page", "entry": [
        {"id": "PAGE_A", "time": 2, "messaging": [{"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE_A"}, "message": {"mid": "m_4", "text": "again A"}}]},
        {"id": "PAGE_C", "time": 2, "messaging": [{"sender": {"id": "PSID3"}, "recipient": {"id": "PAGE_C"}, "message": {"mid": "m_5", "text": "forged C"}}]}]});
    let r = post_meta(&app, "/api/v1/webhooks/facebook", &mixed, Some("meta-app")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(events(&app, &a).await.len(), 2);
    assert_eq!(
        events(&app, &b).await.len(),
        1,
        "page C's entry is not stored"
    );

    // An echo alone stores nothing.
    let echo = json!({"object": "page", "entry": [{"id": "PAGE_A", "time": 1, "messaging": [
        {"sender": {"id": "PAGE_A"}, "recipient": {"id": "PSID1"}, "message": {"mid": "m_echo2", "text": "x", "is_echo": true}}]}]});
    post_meta(&app, "/api/v1/webhooks/facebook", &echo, Some("meta-app")).await;
    assert_eq!(events(&app, &a).await.len(), 2);

    // Instagram, checked with the Instagram channel's own app secret.
    let ig = json!({"object": "instagram", "entry": [{"id": "IG_A", "time": 1, "messaging": [
        {"sender": {"id": "IGSID9"}, "recipient": {"id": "IG_A"}, "timestamp": 1718000000000u64, "message": {"mid": "ig_m1", "text": "hi from IG"}}]}]});
    let r = post_meta(&app, "/api/v1/webhooks/facebook", &ig, Some("meta-app")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post_meta(&app, "/api/v1/webhooks/facebook", &ig, Some("ig-app")).await;
    assert_eq!(r.status, StatusCode::OK);
    let ea = events(&app, &a).await;
    assert_eq!(ea.len(), 3);
    assert_eq!(
        ea[2].channel_type,
        aigentable_platform::model::ChannelType::Instagram
    );
    app.cleanup().await;
}

#[tokio::test]
async fn telegram_updates_need_the_secret_header_and_skip_bots_and_edits() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let tg = create_channel(
        &app,
        &admin,
        json!({"type": "TELEGRAM", "name": "Bot", "config": {"botToken": "77:tg-secret-token"}}),
    )
    .await;
    let id = tg["id"].as_str().unwrap_or_default();
    let secret = tg["verifyToken"].as_str().unwrap_or_default();
    let path = format!("/api/v1/webhooks/telegram/{id}");
    let update = |n: i64, from_bot: bool, text: &str| {
        json!({"update_id": n, "message": {"message_id": n, "from": {"id": 111, "is_bot": from_bot, "first_name": "Ana", "last_name": "Silva", "username": "ana"},
               "chat": {"id": 111, "type": "private"}, "date": 1717000000, "text": text}})
    };
    let post = |body: Value, header: Option<String>| {
        let mut req = app.http.post(app.url(&path)).json(&body);
        if let Some(h) = header {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", h);
        }
        async move { TestApp::reply(req.send().await.expect("sent")).await }
    };
    assert_eq!(
        post(update(1, false, "hi"), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(update(1, false, "hi"), Some("wrong".into()))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert!(events(&app, &admin).await.is_empty());

    let r = post(update(1, false, "hi"), Some(secret.to_owned())).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Retried by Telegram: deduplicated on update_id.
    post(update(1, false, "hi"), Some(secret.to_owned())).await;
    // Bots and edits are ignored.
    post(update(2, true, "bot"), Some(secret.to_owned())).await;
    post(json!({"update_id": 3, "edited_message": {"message_id": 1, "chat": {"id": 111}, "text": "edited"}}), Some(secret.to_owned())).await;
    let stored = events(&app, &admin).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        matches!(&stored[0].items[0], InboundItem::Message { external_user_id, user_name: Some(n), username: Some(u), .. }
        if external_user_id == "111" && n == "Ana Silva" && u == "ana")
    );

    // Unknown channel: 404.
    let r = app
        .http
        .post(app.url("/api/v1/webhooks/telegram/0123456789abcdef01234567"))
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(&update(5, false, "x"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.cleanup().await;
}

#[tokio::test]
async fn unconfirmed_ids_get_no_traffic_and_unverifiable_deliveries_are_counted() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let body = whatsapp_text("PN_NEW", "5511999990000", "wamid.N1", "hi");

    // Typed but never confirmed by the provider: not routed here.
    let typed = create_channel(
        &app,
        &admin,
        json!({"type": "WHATSAPP", "name": "WA", "config": {"phoneNumberId": "PN_NEW", "accessToken": "wa-token-0002"}}),
    )
    .await;
    let id = typed["id"].as_str().unwrap_or_default().to_owned();
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("anything")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);

    // Confirmed, but no app secret yet: deliveries cannot be verified, so
    // they are refused, and counted where the admin sees them.
    let job = test_channel(&app, &admin, &id).await;
    assert_eq!(job["result"]["status"], "NEEDS_SETUP", "{job}");
    assert_eq!(job["result"]["accountConfirmed"], true, "{job}");
    for _ in 0..2 {
        let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("anything")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    assert!(events(&app, &admin).await.is_empty());
    let ch = app.get(&format!("/api/v1/channels/{id}"), &admin).await;
    assert_eq!(ch.body["unverifiedDeliveries"], 2, "{:?}", ch.body);
    assert!(ch.body["lastUnverifiedDeliveryAt"].is_string());
    assert_eq!(ch.body["setup"]["missing"][0]["field"], "config.appSecret");
    assert!(
        ch.body["setup"]["warnings"]
            .to_string()
            .contains("2 webhook deliveries"),
        "{:?}",
        ch.body
    );

    // With the app secret the same delivery goes through.
    let r = app
        .put(
            &format!("/api/v1/channels/{id}"),
            &admin,
            json!({"config": {"appSecret": "wa-secret-2"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_meta(
        &app,
        "/api/v1/webhooks/whatsapp",
        &body,
        Some("wa-secret-2"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(events(&app, &admin).await.len(), 1);
    app.cleanup().await;
}

/// The flood from the security report: one unsigned ~1 MB delivery with
/// 68,000 tiny entries. Refused at Meta's 1,000-entry limit, before any
/// lookup; `/healthz` keeps answering while floods are in flight.
#[tokio::test]
async fn a_flood_of_entries_is_refused_at_once_and_health_stays_responsive() {
    let (app, _fake) = app_with_fake(&[]).await;
    let entries: Vec<String> = (0..68_000).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    let flood = format!(r#"{{"object":"page","entry":[{}]}}"#, entries.join(","));
    assert!(flood.len() > 500_000 && flood.len() < 1024 * 1024);
    let post = || {
        app.http
            .post(app.url("/api/v1/webhooks/facebook"))
            .header("content-type", "application/json")
            .body(flood.clone())
            .send()
    };
    let health = async {
        // Sent while the floods are being read and parsed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let r = app
            .http
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        (r.status(), started.elapsed())
    };
    let (floods, (health_status, health_took)) =
        tokio::join!(futures::future::join_all((0..4).map(|_| post())), health);
    for r in floods {
        let r = TestApp::reply(r.expect("flood sent")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        assert!(r.message().contains("at most 1000 entries"), "{:?}", r.body);
    }
    assert_eq!(health_status, StatusCode::OK);
    // Generous for a debug build on a loaded machine; the quadratic
    // extraction held it for seconds.
    assert!(health_took < Duration::from_secs(2), "{health_took:?}");
    app.cleanup().await;
}

/// End to end, with the inbound and reply handlers: a customer writes on
/// WhatsApp, the retrieval-only responder answers, the answer reaches the
/// provider; receipts move its status forward.
#[tokio::test]
async fn whatsapp_message_in_reply_out_and_receipts() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    whatsapp_channel(&app, &admin, "PN200", Some(&agent)).await;
    let body = whatsapp_text(
        "PN200",
        "5511888880000",
        "wamid.IN1",
        "What are your opening hours?",
    );
    let sends =
        (0..5).map(|_| post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")));
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.status, StatusCode::OK);
    }
    let calls = app
        .eventually(Duration::from_secs(60), || async {
            let c = fake.requests_to("/v21.0/PN200/messages");
            (!c.is_empty()).then_some(c)
        })
        .await
        .expect("the reply reached the provider");
    let call = &calls[0];
    assert_eq!(call.authorization.as_deref(), Some("Bearer wa-token-0001"));
    assert_eq!(call.body["to"], "5511888880000");
    assert_eq!(call.body["type"], "text");
    assert!(
        !call.body["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fake.requests_to("/v21.0/PN200/messages").len(),
        1,
        "one reply for five copies"
    );

    let t = tenant(&admin);
    let messages = app.platform.db.scoped::<Message>(&t);
    assert_eq!(
        messages
            .count(doc! { "direction": "INBOUND" })
            .await
            .expect("count"),
        1
    );
    let reply = sent_reply(&app, &t).await;
    let wamid = reply.external_message_id.clone().unwrap_or_default();
    assert!(wamid.starts_with("wamid.fake"));

    // A read receipt moves it to READ; a late "delivered" does not undo it.
    for status in ["read", "delivered"] {
        let receipt = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": "PN200"},
            "statuses": [{"id": wamid, "status": status, "timestamp": "1717000001", "recipient_id": "5511888880000"}]}}]}]});
        let r = post_meta(
            &app,
            "/api/v1/webhooks/whatsapp",
            &receipt,
            Some("wa-secret"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let read = app
        .eventually(Duration::from_secs(20), || async {
            let m = messages.find_by_id(&reply.id).await.ok().flatten()?;
            (m.status == MessageStatus::Read).then_some(m)
        })
        .await;
    assert!(read.is_some(), "read receipt applied");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = messages
        .find_by_id(&reply.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(m.status, MessageStatus::Read);
    app.cleanup().await;
}

/// A returning customer's message, arriving as a signed webhook, is noted
/// on their open conversation by the write that finds it: the same
/// conversation takes every message (a RESOLVED one is reopened), the
/// contact follows a changed profile name, and every message
/// has its analytics fact, the first one starting the conversation.
#[tokio::test]
async fn a_returning_customer_is_noted_on_their_conversation_reopened_and_renamed() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    // No agent: staff answer, so the messages are the customer's alone.
    whatsapp_channel(&app, &admin, "PN300", None).await;
    let t = tenant(&admin);
    let messages = app.platform.db.scoped::<Message>(&t);
    let says = async |wamid: &str, name: &str, n: u64| {
        let mut body = whatsapp_text("PN300", "5511777770000", wamid, "hello again");
        body["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["name"] = json!(name);
        let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
        assert_eq!(r.status, StatusCode::OK);
        let stored = app
            .eventually(Duration::from_secs(20), || async {
                let c = messages
                    .count(doc! { "direction": "INBOUND" })
                    .await
                    .unwrap_or(0);
                (c == n).then_some(())
            })
            .await;
        assert!(stored.is_some(), "message {n} stored");
        let pending = app.settled_by_workers(Duration::from_secs(20)).await;
        assert!(pending.is_empty(), "the workers ran every job: {pending:?}");
        let r = app.get("/api/v1/conversations", &admin).await;
        assert_eq!(
            r.body["pagination"]["total"], 1,
            "one conversation: {:?}",
            r.body
        );
        r.body["conversations"][0].clone()
    };

    let first = says("wamid.R1", "Ana", 1).await;
    let id = first["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(first["contact"]["name"], "Ana");
    let second = says("wamid.R2", "Ana", 2).await;
    assert_eq!(second["id"], id.as_str());

    let r = app
        .put(
            &format!("/api/v1/conversations/{id}/status"),
            &admin,
            json!({ "status": "RESOLVED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let third = says("wamid.R3", "Ana Souza", 3).await;
    assert_eq!(
        third["id"],
        id.as_str(),
        "the resolved conversation took it"
    );
    assert_ne!(third["status"], "RESOLVED", "reopened");
    assert_eq!(third["contact"]["name"], "Ana Souza");
    let inbound = messages
        .count(doc! { "direction": "INBOUND", "conversationId": &id })
        .await
        .expect("count");
    assert_eq!(inbound, 3);
    let stored = app
        .platform
        .db
        .unscoped::<bson::Document>("conversations")
        .find_one(doc! { "_id": &id })
        .await
        .expect("read")
        .expect("the conversation");
    let all = messages
        .count(doc! { "conversationId": &id })
        .await
        .expect("count");
    assert_eq!(
        stored.get_i64("messageCount").ok(),
        i64::try_from(all).ok(),
        "every message counted once"
    );
    let facts: Vec<bson::Document> = {
        use futures::TryStreamExt;
        app.platform
            .db
            .unscoped::<bson::Document>("analytics_facts")
            .find(doc! { "conversationId": &id, "kind": "CUSTOMER_MESSAGE" })
            .await
            .expect("facts")
            .try_collect()
            .await
            .expect("facts")
    };
    assert_eq!(facts.len(), 3, "{facts:?}");
    assert_eq!(
        facts
            .iter()
            .filter(|f| f.get_bool("started").unwrap_or(false))
            .count(),
        1,
        "{facts:?}"
    );
    let contacts = app.platform.db.scoped::<Contact>(&t);
    let contact = contacts
        .find_one(doc! { "externalId": "5511777770000" })
        .await
        .expect("read")
        .expect("the contact");
    assert_eq!(stored.get_str("contactId").ok(), Some(contact.id.as_str()));

    // Closed for good, the customer writes again: a new conversation,
    // created by the note, with the contact they have.
    let r = app
        .put(
            &format!("/api/v1/conversations/{id}/status"),
            &admin,
            json!({ "status": "CLOSED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut body = whatsapp_text("PN300", "5511777770000", "wamid.R4", "me again");
    body["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["name"] = json!("");
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::OK);
    let fourth = app
        .eventually(Duration::from_secs(20), || async {
            messages
                .find_one(doc! { "externalMessageId": "wamid.R4" })
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("the fourth message stored");
    assert_ne!(fourth.conversation_id, id, "not the closed conversation");
    assert_eq!(fourth.sender_id.as_deref(), Some(contact.id.as_str()));
    let r = app
        .get(
            &format!("/api/v1/conversations/{}", fourth.conversation_id),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["contact"]["id"], contact.id.as_str(), "{:?}", r.body);
    assert_eq!(r.body["contact"]["name"], "Ana Souza", "{:?}", r.body);
    assert_eq!(r.body["messageCount"], 1, "{:?}", r.body);
    assert_eq!(r.body["lastMessagePreview"], "me again", "{:?}", r.body);
    assert_eq!(
        contacts.count(doc! {}).await.expect("count"),
        1,
        "one contact"
    );
    let created = app
        .platform
        .db
        .unscoped::<bson::Document>("conversations")
        .find_one(doc! { "_id": &fourth.conversation_id })
        .await
        .expect("read")
        .expect("the new conversation");
    assert_eq!(created.get_str("contactId").ok(), Some(contact.id.as_str()));
    assert_eq!(
        created.get_str("contactName").ok(),
        Some("Ana Souza"),
        "the list's name comes from the contact: {created:?}"
    );
    let started = app
        .eventually(Duration::from_secs(20), || async {
            app.platform
                .db
                .unscoped::<bson::Document>("analytics_facts")
                .find_one(doc! { "conversationId": &fourth.conversation_id, "started": true })
                .await
                .ok()
                .flatten()
        })
        .await;
    assert!(
        started.is_some(),
        "the new conversation's first message started it"
    );
    app.cleanup().await;
}

/// A bot reply is delivered by a job with no record of its own: the
/// message's status is the record. When Redis lost that job (restarted
/// without its append-only file, a failover), the sweep finds the message
/// still QUEUED and queues its delivery again: the customer gets it.
#[tokio::test]
async fn a_bot_reply_whose_delivery_redis_lost_is_sent_by_the_sweep() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    whatsapp_channel(&app, &admin, "PN210", Some(&agent)).await;
    let body = whatsapp_text("PN210", "5511888880210", "wamid.IN210", "Are you open?");
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::OK);
    let to_provider = "/v21.0/PN210/messages";
    app.eventually(Duration::from_secs(60), || async {
        (!fake.requests_to(to_provider).is_empty()).then_some(())
    })
    .await
    .expect("the first reply reached the provider");
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    let first = sent_reply(&app, &tenant(&admin)).await;

    // A reply stored three minutes ago whose delivery job Redis no longer
    // holds.
    let then = chrono::Utc::now() - chrono::Duration::minutes(3);
    let mut lost = first.clone();
    lost.id = aigentable_platform::ids::new_id();
    lost.content = "We open at nine every morning.".to_owned();
    lost.status = MessageStatus::Queued;
    lost.external_message_id = None;
    lost.dedup_key = None;
    lost.created_at = then;
    lost.updated_at = then;
    messages.insert(&lost).await.expect("stored");
    // One stored just now is still its own job's to deliver.
    let mut recent = lost.clone();
    recent.id = aigentable_platform::ids::new_id();
    recent.content = "Still on its way.".to_owned();
    recent.created_at = chrono::Utc::now();
    recent.updated_at = recent.created_at;
    messages.insert(&recent).await.expect("stored");

    let client = JobClient::connect(&app.platform).await.expect("client");
    let tick = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    fire(&client, &app.platform.kv, Task::Sweep, tick)
        .await
        .expect("sweep enqueued");
    let sent = message_once(&app, &messages, &lost.id, Duration::from_secs(30), |m| {
        m.status == MessageStatus::Sent
    })
    .await;
    assert!(sent.is_some(), "the lost reply was delivered");
    let texts = texts_sent(&fake, to_provider);
    assert_eq!(
        texts
            .iter()
            .filter(|t| *t == "We open at nine every morning.")
            .count(),
        1,
        "sent once: {texts:?}"
    );
    assert!(!texts.iter().any(|t| t == "Still on its way."), "{texts:?}");
    let still = messages
        .find_by_id(&recent.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(still.status, MessageStatus::Queued, "left to its own job");
    app.cleanup().await;
}

/// A reply stored first in line is stored `SENDING`, claimed for its
/// delivery's first run. When the attempt that stored it stopped before
/// queueing that run, the reply job's retry finds it and queues the run:
/// sent at once, once, not as a resend. When Redis lost both jobs, the
/// sweep finds it `SENDING` and queues its delivery, which dates the claim
/// (the first run may have begun its send at any time), waits it out (a
/// minute) and sends it again, marked `resent` (whether it went out before
/// is unknown).
#[tokio::test]
async fn a_reply_stored_claimed_whose_delivery_was_never_queued_is_sent() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    whatsapp_channel(&app, &admin, "PN213", Some(&agent)).await;
    let body = whatsapp_text("PN213", "5511888880213", "wamid.IN213", "Are you open?");
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::OK);
    let to_provider = "/v21.0/PN213/messages";
    let first = sent_reply(&app, &tenant(&admin)).await;
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    let question = messages
        .find_one(doc! { "externalMessageId": "wamid.IN213" })
        .await
        .expect("read")
        .expect("stored");

    // The customer wrote again; the reply was stored claimed, and the
    // attempt that stored it stopped there.
    let mut asked = question.clone();
    asked.id = aigentable_platform::ids::new_id();
    asked.external_message_id = Some("wamid.IN213b".to_owned());
    asked.dedup_key = None;
    asked.content = "And on Sundays?".to_owned();
    asked.created_at = chrono::Utc::now();
    asked.updated_at = asked.created_at;
    messages.insert(&asked).await.expect("stored");
    let stored_claimed = |content: &str, at: chrono::DateTime<chrono::Utc>, to: &Message| {
        let mut m = first.clone();
        m.id = aigentable_platform::ids::new_id();
        m.content = content.to_owned();
        m.status = MessageStatus::Sending;
        m.external_message_id = None;
        m.reply_to = Some(to.id.clone());
        m.dedup_key = Some(aigentable_platform::model::conversation::reply_dedup_key(
            &to.id,
        ));
        m.metadata = bson::Document::new();
        m.created_at = at;
        m.updated_at = at;
        m
    };
    let reply = stored_claimed(
        "We are closed on Sundays.",
        chrono::Utc::now() + chrono::Duration::milliseconds(5),
        &asked,
    );
    messages.insert(&reply).await.expect("stored");
    // The first reply was the fallback (the knowledge base is empty), which
    // handed the conversation to staff; staff gave it back to the bot.
    app.platform
        .db
        .unscoped::<bson::Document>("conversations")
        .update_one(
            doc! { "_id": &asked.conversation_id },
            doc! { "$set": { "status": "ACTIVE" } },
        )
        .await
        .expect("conversation updated");
    let client = JobClient::connect(&app.platform).await.expect("client");
    let retry = AnswerMessage {
        agent_id: agent.clone(),
        conversation_id: asked.conversation_id.clone(),
        message_id: asked.id.clone(),
        conversation: None,
        fact: None,
    };
    let queued = client
        .push(&retry.job_id(), &tenant(&admin), retry)
        .await
        .expect("pushed");
    assert!(queued, "the reply job's retry was queued");
    // Well within the minute a claim lives: sent as its first run would.
    let sent = message_once(&app, &messages, &reply.id, Duration::from_secs(20), |m| {
        m.status == MessageStatus::Sent
    })
    .await
    .expect("the reply stored claimed was delivered");
    assert_eq!(sent.metadata.get_bool("resent").ok(), None, "{sent:?}");

    // Stored claimed three minutes ago, neither job left in Redis.
    let mut lost = stored_claimed(
        "We open at nine.",
        chrono::Utc::now() - chrono::Duration::minutes(3),
        &question,
    );
    lost.dedup_key = None;
    messages.insert(&lost).await.expect("stored");
    let tick = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    fire(&client, &app.platform.kv, Task::Sweep, tick)
        .await
        .expect("sweep enqueued");
    let dated = message_once(&app, &messages, &lost.id, Duration::from_secs(30), |m| {
        m.updated_at > m.created_at
    })
    .await
    .expect("the sweep's delivery dated the claim");
    assert_eq!(dated.status, MessageStatus::Sending, "not sent at once");
    let resent = message_once(&app, &messages, &lost.id, Duration::from_secs(120), |m| {
        m.status == MessageStatus::Sent
    })
    .await
    .expect("the sweep delivered the reply left claimed");
    assert_eq!(
        resent.metadata.get_bool("resent").ok(),
        Some(true),
        "{resent:?}"
    );
    let texts = texts_sent(&fake, to_provider);
    for text in ["We are closed on Sundays.", "We open at nine."] {
        assert_eq!(
            texts.iter().filter(|t| *t == text).count(),
            1,
            "{text} sent once: {texts:?}"
        );
    }
    app.cleanup().await;
}

/// Runs every queued job, follow-ups included, until none is left.
async fn run_all(app: &TestApp) {
    use aigentable_jobs::Queue;
    for _ in 0..5 {
        if app.pending_jobs().await.is_empty() {
            return;
        }
        for queue in [
            Queue::Integrations,
            Queue::Inbound,
            Queue::Replies,
            Queue::Outbound,
            Queue::Emails,
            Queue::Maintenance,
        ] {
            app.drain(queue).await;
        }
    }
    let left = app.pending_jobs().await;
    assert!(left.is_empty(), "jobs left: {left:?}");
}

/// An app whose jobs run only when a test drains them, a WhatsApp channel
/// (phone number id `pnid`) whose agent has no documents, and customer
/// `from`'s first message answered (the fallback) and sent once. Answers
/// the app, its fake provider, the admin, the agent and the reply as sent.
async fn answered_by_hand(
    pnid: &str,
    from: &str,
) -> (TestApp, FakeProviders, Session, String, Message) {
    let (app, fake) = aigentable_tests::fake_providers::app_with_fake_and(&[], false).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    let channel = create_channel(
        &app,
        &admin,
        json!({
            "type": "WHATSAPP", "name": "WA", "agentId": agent,
            "config": {"phoneNumberId": pnid, "accessToken": "wa-token-0001", "appSecret": "wa-secret"}
        }),
    )
    .await;
    let id = channel["id"].as_str().unwrap_or_default();
    let r = app
        .post(&format!("/api/v1/channels/{id}/test"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    run_all(&app).await;
    let body = whatsapp_text(pnid, from, &format!("wamid.{pnid}"), "Are you open?");
    let r = post_meta(&app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::OK);
    run_all(&app).await;
    let sent = sent_reply(&app, &tenant(&admin)).await;
    assert_eq!(
        texts_sent(&fake, &format!("/v21.0/{pnid}/messages")).len(),
        1,
        "answered"
    );
    (app, fake, admin, agent, sent)
}

/// The reply job run again (its first attempt stopped after queueing the
/// delivery: a Redis error, a lapsed lease) reads the reply stored claimed
/// and untouched. If the delivery's first run sends it and leaves Redis
/// before the retry queues a delivery again, the delivery it queues reads
/// the reply, finds it sent and sends nothing: the customer is answered
/// once.
#[tokio::test]
async fn a_reply_job_run_again_does_not_resend_a_reply_sent_meanwhile() {
    use aigentable_jobs::Queue;
    use aigentable_jobs::types::DeliverReply;

    let (app, fake, admin, agent, sent) = answered_by_hand("PN214", "5511888880214").await;
    let to_provider = "/v21.0/PN214/messages";

    // The retry's read: the reply as it was stored, claimed for the first
    // run (the workspace delivers at least once, the reply was first in
    // line).
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    let as_stored = doc! {
        "status": "SENDING",
        "updatedAt": bson::DateTime::from_chrono(sent.created_at),
    };
    let as_sent = doc! {
        "status": "SENT",
        "updatedAt": bson::DateTime::from_chrono(sent.updated_at),
    };
    messages
        .update_one(doc! { "_id": &sent.id }, doc! { "$set": as_stored })
        .await
        .expect("written")
        .expect("the reply");
    // The first reply was the fallback (the knowledge base is empty), which
    // handed the conversation to staff; staff gave it back to the bot.
    app.platform
        .db
        .unscoped::<bson::Document>("conversations")
        .update_one(
            doc! { "_id": &sent.conversation_id },
            doc! { "$set": { "status": "ACTIVE" } },
        )
        .await
        .expect("conversation updated");
    let question = sent.reply_to.clone().expect("a reply to the question");
    let retry = AnswerMessage {
        agent_id: agent.clone(),
        conversation_id: sent.conversation_id.clone(),
        message_id: question,
        conversation: None,
        fact: None,
    };
    let client = JobClient::connect(&app.platform).await.expect("client");
    assert!(
        client
            .push(&retry.job_id(), &tenant(&admin), retry)
            .await
            .expect("pushed"),
        "the reply job's retry was queued"
    );
    app.drain(Queue::Replies).await;
    assert_eq!(
        app.pending_of::<DeliverReply>().await,
        1,
        "the retry queued a delivery of the reply"
    );
    // Meanwhile, the first run's outcome: sent.
    messages
        .update_one(doc! { "_id": &sent.id }, doc! { "$set": as_sent })
        .await
        .expect("written")
        .expect("the reply");
    run_all(&app).await;
    assert_eq!(
        texts_sent(&fake, to_provider),
        vec![sent.content.clone()],
        "the customer was answered once"
    );
    let now = messages
        .find_by_id(&sent.id)
        .await
        .expect("read")
        .expect("the reply");
    assert_eq!(now.status, MessageStatus::Sent);
    assert_eq!(
        now.updated_at, sent.updated_at,
        "left as the first run left it"
    );
    app.cleanup().await;
}

/// A reply's first run, trusted with the reply stored claimed for it, is
/// stopped after its send and before the outcome is stored (its lease
/// lapsed while Redis was away): the job goes back without spending an
/// attempt, so it runs again as attempt 1 with the same reply in it, told
/// by the queue that it resumes. That run reads the reply instead of
/// sending it again: it finds it claimed, dates the claim and waits it out
/// (then sends it as a resend).
#[tokio::test]
async fn a_first_run_started_again_reads_the_reply_instead_of_sending_it_again() {
    use aigentable_jobs::types::DeliverReply;
    use aigentable_jobs::types::deliver_reply::ReadyReply;
    use aigentable_workers::WorkerState;
    use aigentable_workers::runner::{Handle, JobContext, JobError};

    let (app, fake, admin, _, sent) = answered_by_hand("PN215", "5511888880215").await;
    let to_provider = "/v21.0/PN215/messages";

    // The stopped run sent the reply; its outcome was never stored.
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    messages
        .update_one(
            doc! { "_id": &sent.id },
            doc! { "$set": {
                "status": "SENDING",
                "updatedAt": bson::DateTime::from_chrono(sent.created_at),
            }, "$unset": { "externalMessageId": "" } },
        )
        .await
        .expect("written")
        .expect("the reply");
    let mut as_stored = sent.clone();
    as_stored.status = MessageStatus::Sending;
    as_stored.updated_at = sent.created_at;
    as_stored.external_message_id = None;
    let again = DeliverReply {
        message_id: sent.id.clone(),
        channel_id: sent.channel_id.clone(),
        ready: Some(Box::new(ReadyReply {
            message: as_stored,
            to: "5511888880215".to_owned(),
            first_in_line: true,
        })),
        take_stored_claim: false,
    };
    let ctx = JobContext {
        state: WorkerState::new(app.platform.clone()).expect("worker state"),
        job_id: again.job_id(),
        tenant_id: tenant(&admin),
        attempt: 1,
        // As the queue hands it back (see the queue's `resumed` tests).
        resumed: true,
    };
    let outcome = again.handle(ctx).await;
    assert!(
        matches!(outcome, Err(JobError::Defer { .. })),
        "waits the claim out: {outcome:?}"
    );
    assert_eq!(
        texts_sent(&fake, to_provider).len(),
        1,
        "not sent again at once"
    );
    let now = messages
        .find_by_id(&sent.id)
        .await
        .expect("read")
        .expect("the reply");
    assert_eq!(now.status, MessageStatus::Sending);
    assert!(
        now.updated_at > now.created_at,
        "the claim was dated: {now:?}"
    );
    app.cleanup().await;
}

/// A customer whose reply job Redis lost (a restart without its
/// append-only file) is answered by the sweep once they have waited a few
/// minutes; a conversation the bot leaves waiting on purpose (its agent is
/// switched off) is asked for once per waiting spell, not at every tick.
#[tokio::test]
async fn a_customer_whose_reply_redis_lost_is_answered_by_the_sweep() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    whatsapp_channel(&app, &admin, "PN211", Some(&agent)).await;
    let messages = app.platform.db.scoped::<Message>(&tenant(&admin));
    // Stored, its reply job run (and skipped: the agent is off), the
    // customer left waiting since four minutes ago.
    let waiting = |from: &'static str, wamid: &'static str| {
        let (app, messages) = (&app, &messages);
        async move {
            let body = whatsapp_text("PN211", from, wamid, "Are you open?");
            let r = post_meta(app, "/api/v1/webhooks/whatsapp", &body, Some("wa-secret")).await;
            assert_eq!(r.status, StatusCode::OK);
            let stored = app
                .eventually(Duration::from_secs(30), || async {
                    messages
                        .find_one(doc! { "externalMessageId": wamid })
                        .await
                        .ok()
                        .flatten()
                })
                .await
                .expect("the message is stored");
            app.unrecorded_job_ran::<AnswerMessage>(&format!("answer-{}", stored.id))
                .await;
            let then = chrono::Utc::now() - chrono::Duration::minutes(4);
            app.platform
                .db
                .unscoped::<bson::Document>("conversations")
                .update_one(
                    doc! { "_id": &stored.conversation_id },
                    doc! { "$set": { "awaitingSince": bson::DateTime::from_chrono(then) } },
                )
                .await
                .expect("conversation updated");
        }
    };
    set_agent_active(&app, &admin, &agent, false).await;
    waiting("5511888880211", "wamid.IN211").await;
    waiting("5511888880212", "wamid.IN212").await;
    // The reply jobs stored no reply: the facts they carried for the
    // customers' messages were recorded on their own.
    for wamid in ["wamid.IN211", "wamid.IN212"] {
        let message = messages
            .find_one(doc! { "externalMessageId": wamid })
            .await
            .expect("read")
            .expect("stored");
        let fact = app
            .platform
            .db
            .unscoped::<bson::Document>("analytics_facts")
            .find_one(doc! { "_id": format!("m:{}", message.id) })
            .await
            .expect("read")
            .expect("the customer message's fact");
        assert_eq!(
            fact.get_str("kind").ok(),
            Some("CUSTOMER_MESSAGE"),
            "{fact:?}"
        );
        assert_eq!(fact.get_bool("started").ok(), Some(true), "{fact:?}");
    }
    // One customer's reply is lost; the other's agent stays off.
    set_agent_active(&app, &admin, &agent, true).await;
    let off_for_212 = create_agent(&app, &admin).await;
    set_agent_active(&app, &admin, &off_for_212, false).await;
    let second = messages
        .find_one(doc! { "externalMessageId": "wamid.IN212" })
        .await
        .expect("read")
        .expect("stored");
    app.platform
        .db
        .unscoped::<bson::Document>("conversations")
        .update_one(
            doc! { "_id": &second.conversation_id },
            doc! { "$set": { "agentId": &off_for_212 } },
        )
        .await
        .expect("conversation updated");

    let client = JobClient::connect(&app.platform).await.expect("client");
    let sweep = |tick: u64| {
        let (app, client) = (&app, &client);
        async move {
            let id = fire(client, &app.platform.kv, Task::Sweep, tick)
                .await
                .expect("sweep enqueued")
                .expect("tick claimed");
            let record = app
                .eventually(Duration::from_secs(30), || async {
                    app.platform
                        .db
                        .unscoped::<bson::Document>("jobs")
                        .find_one(doc! { "_id": &id, "status": "SUCCEEDED" })
                        .await
                        .ok()
                        .flatten()
                })
                .await
                .expect("the sweep ran");
            record
                .get_document("result")
                .ok()
                .and_then(|r| {
                    r.get_i64("reanswered")
                        .ok()
                        .or_else(|| r.get_i32("reanswered").ok().map(i64::from))
                })
                .unwrap_or(-1)
        }
    };
    let tick = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    assert_eq!(
        sweep(tick).await,
        2,
        "both waiting customers asked for once"
    );
    let to_provider = "/v21.0/PN211/messages";
    let answered = app
        .eventually(Duration::from_secs(30), || async {
            let sent = fake.requests_to(to_provider);
            (!sent.is_empty()).then_some(sent)
        })
        .await
        .expect("the customer whose reply was lost is answered");
    assert_eq!(
        answered[0].body["to"], "5511888880211",
        "{:?}",
        answered[0].body
    );
    assert_eq!(sweep(tick + 60).await, 0, "asked once per waiting spell");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests_to(to_provider).len(), 1, "answered once");
    app.cleanup().await;
}

/// Webhooks read channels from each api process's cache, and a change made
/// through another replica reaches it at once: a rotated app secret
/// refuses the old signature and takes the new one, a deactivated channel
/// takes no traffic, a deleted one is unknown (404) — each on the very next
/// delivery, with no wait for the cache to expire.
#[tokio::test]
async fn a_channel_change_on_one_replica_routes_the_next_webhook_on_another() {
    let (app, _fake) = app_with_fake(&[]).await;
    let replica = app.spawn_replica().await;
    let admin = app.register("Acme").await;
    let wa = whatsapp_channel(&app, &admin, "PN_ROT", None).await;
    let id = wa["id"].as_str().unwrap_or_default().to_owned();
    let path = "/api/v1/webhooks/whatsapp";
    let text = |n: u32| whatsapp_text("PN_ROT", "5511999990000", &format!("wamid.ROT{n}"), "hi");

    // Cached on the replica by its first delivery.
    let r = post_meta(&replica, path, &text(1), Some("wa-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = app
        .put(
            &format!("/api/v1/channels/{id}"),
            &admin,
            json!({"config": {"appSecret": "wa-secret-rotated"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let old = post_meta(&replica, path, &text(2), Some("wa-secret")).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{:?}", old.body);
    let new = post_meta(&replica, path, &text(2), Some("wa-secret-rotated")).await;
    assert_eq!(new.status, StatusCode::OK, "{:?}", new.body);

    let r = app
        .put(
            &format!("/api/v1/channels/{id}"),
            &admin,
            json!({"isActive": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = post_meta(&replica, path, &text(3), Some("wa-secret-rotated")).await;
    assert_eq!(r.status, StatusCode::OK, "acknowledged: {:?}", r.body);

    let r = app.delete(&format!("/api/v1/channels/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = post_meta(&replica, path, &text(4), Some("wa-secret-rotated")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);

    // Of the four customers' messages only the two sent while the channel
    // was active with the right secret were stored.
    let stored: Vec<String> = events(&app, &admin)
        .await
        .iter()
        .flat_map(|e| e.items.iter().map(|i| i.external_message_id().to_owned()))
        .collect();
    assert_eq!(stored, vec!["wamid.ROT1", "wamid.ROT2"]);
    drop(replica);
    app.cleanup().await;
}
