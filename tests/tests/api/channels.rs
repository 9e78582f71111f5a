//! Channels: the guide's bodies accepted with what is missing listed in
//! `setup`, CRUD with per-type validation, masked secrets, completion by
//! `PUT`, the test job resolving ids from the (fake) provider and claiming
//! only the routing id the provider confirmed (unique across tenants),
//! Telegram webhook registration, and `deliver_message` (exactly once, in
//! order, retries on 5xx only, dropped on takeover).

use std::time::Duration;

use bson::doc;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use aigentable_jobs::types::DeliverMessage;
use aigentable_jobs::{JobClient, Requester};
use aigentable_platform::ids::{TenantId, new_id};
use aigentable_platform::model::{
    Channel, ChannelType, Contact, Conversation, ConversationStatus, Message, MessageDirection,
    MessageStatus, SenderType,
};
use aigentable_tests::fake_providers::{
    FakeProviders, app_with_fake, create_agent, create_channel, job_done, post_meta, test_channel,
    whatsapp_text,
};
use aigentable_tests::socket::connect;
use aigentable_tests::{Session, TestApp};

fn whatsapp_body(pnid: &str) -> Value {
    json!({
        "type": "WHATSAPP", "name": "WhatsApp Business",
        "config": {"phoneNumberId": pnid, "phoneNumber": "+1 555 000 1111",
                   "accessToken": "EAAG-whatsapp-token-9876", "appSecret": "wa-app-secret",
                   "webhookUrl": "https://ignored.example.com"},
        "isActive": true
    })
}

#[tokio::test]
async fn crud_validates_per_type_masks_secrets_and_keeps_routing_ids_unique() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;

    // Malformed values are refused, naming the field.
    let r = app
        .post("/api/v1/channels", &admin, json!({"type": "WHATSAPP", "name": "x", "config": {"phoneNumberId": "12 34", "accessToken": "t", "appSecret": "s"}}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "config.phoneNumberId");
    let r = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"type": "SMS", "name": "x", "config": {}}),
        )
        .await;
    assert_eq!(r.body["details"]["field"], "type");
    let r = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"type": "TELEGRAM", "name": "x", "config": {"botToken": "no-colon"}}),
        )
        .await;
    assert_eq!(r.body["details"]["field"], "config.botToken");
    let r = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"type": "WEBSITE", "name": "x", "config": {"allowedOrigins": "https://shop.example.com"}}),
        )
        .await;
    assert_eq!(r.body["details"]["field"], "config.allowedOrigins");
    let mut with_agent = whatsapp_body("111");
    with_agent["agentId"] = json!(new_id());
    let r = app.post("/api/v1/channels", &admin, with_agent).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "unknown agent: {:?}",
        r.body
    );

    // Created: secrets masked, webhook URL and verify token shown.
    let agent = create_agent(&app, &admin).await;
    let mut body = whatsapp_body("1234567890");
    body["agentId"] = json!(agent);
    let created = create_channel(&app, &admin, body).await;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(created["type"], "WHATSAPP");
    assert_eq!(created["agentId"], agent.as_str());
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["config"]["accessToken"], "****9876");
    assert_eq!(created["config"]["appSecret"], "****cret");
    assert_eq!(created["config"]["phoneNumberId"], "1234567890");
    assert!(created["config"].get("webhookUrl").is_none());
    assert_eq!(
        created["webhookUrl"],
        "https://bot.example.com/api/v1/webhooks/whatsapp"
    );
    let verify = created["verifyToken"].as_str().unwrap_or_default();
    assert!(verify.len() >= 24, "{created}");
    let text = created.to_string();
    assert!(!text.contains("whatsapp-token") && !text.contains("wa-app-secret"));

    // Stored sealed, never in plain text.
    let tenant = TenantId::from_trusted(admin.tenant_id.clone());
    let stored = app
        .platform
        .db
        .scoped::<Channel>(&tenant)
        .find_by_id(&id)
        .await
        .expect("read")
        .expect("stored");
    let sealed = stored
        .secrets
        .get("accessToken")
        .cloned()
        .unwrap_or_default();
    assert!(sealed.starts_with("v1:") && !sealed.contains("whatsapp-token"));
    assert_eq!(
        app.platform.secrets.open(&sealed).ok().as_deref(),
        Some("EAAG-whatsapp-token-9876")
    );

    // PUT merges: secrets not re-sent (or sent back masked) stay.
    let r = app
        .put(&format!("/api/v1/channels/{id}"), &admin, json!({"name": "WA main", "config": {"phoneNumber": "+1 555 999", "appSecret": "****cret"}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "WA main");
    assert_eq!(r.body["config"]["phoneNumber"], "+1 555 999");
    assert_eq!(r.body["config"]["phoneNumberId"], "1234567890");
    assert_eq!(r.body["config"]["accessToken"], "****9876");
    let stored = app
        .platform
        .db
        .scoped::<Channel>(&tenant)
        .find_by_id(&id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        stored.secrets.get("accessToken"),
        Some(&sealed),
        "unchanged secret kept as sealed"
    );
    let r = app
        .put(
            &format!("/api/v1/channels/{id}"),
            &admin,
            json!({"type": "TELEGRAM"}),
        )
        .await;
    assert_eq!(r.body["details"]["field"], "type");

    // One provider account, one channel, across tenants; but an id typed
    // into a channel claims nothing until the provider confirms the
    // channel's token owns it, so the first to type it blocks nobody.
    let other = app.register("Other Co").await;
    let squatter = create_channel(&app, &other, whatsapp_body("1234567890")).await;
    let squatter_id = squatter["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(squatter["setup"]["accountConfirmed"], false);
    let job = test_channel(&app, &admin, &id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    assert_eq!(job["result"]["accountConfirmed"], true, "{job}");
    let r = app
        .post("/api/v1/channels", &other, whatsapp_body("1234567890"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .post("/api/v1/channels", &admin, whatsapp_body("1234567890"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The unconfirmed copy cannot claim it either.
    let job = test_channel(&app, &other, &squatter_id).await;
    assert_eq!(job["result"]["status"], "ERROR", "{job}");
    assert!(
        job["result"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already connected to another channel"),
        "{job}"
    );

    // Tenancy and roles.
    let r = app.get(&format!("/api/v1/channels/{id}"), &other).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let user = app.add_user(&admin, "TENANT_USER").await;
    let r = app.get(&format!("/api/v1/channels/{id}"), &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(
        r.body["verifyToken"], verify,
        "the verify token is for admins"
    );
    let r = app
        .post("/api/v1/channels", &user, whatsapp_body("555"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let list = app.get("/api/v1/channels?type=whatsapp", &admin).await;
    assert_eq!(list.body["pagination"]["total"], 1, "{:?}", list.body);
    assert_eq!(list.body["channels"][0]["id"], id.as_str());

    // A website channel gets a public key and an embed snippet.
    let web = create_channel(
        &app,
        &admin,
        json!({"type": "WEBSITE", "name": "Site", "config": {"allowedOrigins": ["https://shop.example.com/"], "welcomeMessage": "Hi!"}}),
    )
    .await;
    let key = web["publicKey"].as_str().unwrap_or_default();
    assert!(key.starts_with("pk_"));
    assert!(web["embedCode"].as_str().unwrap_or_default().contains(key));
    assert_eq!(
        web["config"]["allowedOrigins"][0],
        "https://shop.example.com"
    );
    assert_eq!(web["status"], "ACTIVE");
    assert_eq!(web["setup"]["warnings"].as_array().map(Vec::len), Some(0));

    // Delete; the provider id is free again.
    let r = app.delete(&format!("/api/v1/channels/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/channels/{id}"), &admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .post("/api/v1/channels", &other, whatsapp_body("1234567890"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let job = test_channel(&app, &other, &squatter_id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    app.cleanup().await;
}

#[tokio::test]
async fn telegram_registers_its_webhook_and_tests_report_on_the_channel() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let token = "123456:AAE-telegram_token";
    let created = create_channel(
        &app,
        &admin,
        json!({"type": "TELEGRAM", "name": "Bot", "config": {"botToken": token}}),
    )
    .await;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let secret = created["verifyToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let webhook_url = format!("https://bot.example.com/api/v1/webhooks/telegram/{id}");
    assert_eq!(created["webhookUrl"], webhook_url.as_str());
    assert_eq!(created["config"]["botToken"], "****oken");

    // setWebhook is called by a job: URL with the channel id, our secret.
    let calls = app
        .eventually(Duration::from_secs(20), || async {
            let c = fake.requests_to("/setWebhook");
            (!c.is_empty()).then_some(c)
        })
        .await
        .expect("setWebhook called");
    assert_eq!(calls[0].path, format!("/bot{token}/setWebhook"));
    assert_eq!(calls[0].body["url"], webhook_url.as_str());
    assert_eq!(calls[0].body["secret_token"], secret.as_str());
    assert!(!webhook_url.contains(token));

    // Test: getMe, verdict on the channel and in the job result.
    let r = app
        .post(&format!("/api/v1/channels/{id}/test"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job = job_done(&app, &admin, r.body["jobId"].as_str().unwrap_or_default()).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["result"]["status"], "ACTIVE");
    assert_eq!(
        fake.requests_to("/getMe")[0].path,
        format!("/bot{token}/getMe")
    );
    let ch = app.get(&format!("/api/v1/channels/{id}"), &admin).await;
    assert_eq!(ch.body["status"], "ACTIVE");
    assert_eq!(ch.body["config"]["botUsername"], "fake_bot");
    assert!(ch.body["lastTestedAt"].is_string());

    // A refused token: ERROR with the provider's words.
    let wa = create_channel(&app, &admin, whatsapp_body("777")).await;
    let wa_id = wa["id"].as_str().unwrap_or_default().to_owned();
    fake.fail_next(
        "/v21.0/777",
        1,
        401,
        json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}),
    );
    let r = app
        .post(&format!("/api/v1/channels/{wa_id}/test"), &admin, json!({}))
        .await;
    let job = job_done(&app, &admin, r.body["jobId"].as_str().unwrap_or_default()).await;
    assert_eq!(job["result"]["status"], "ERROR", "{job}");
    let call = &fake.requests_to("/v21.0/777")[0];
    assert_eq!(call.method, "GET");
    assert_eq!(
        call.authorization.as_deref(),
        Some("Bearer EAAG-whatsapp-token-9876")
    );
    let ch = app.get(&format!("/api/v1/channels/{wa_id}"), &admin).await;
    assert_eq!(ch.body["status"], "ERROR");
    assert!(
        ch.body["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("Invalid OAuth access token"),
        "{:?}",
        ch.body
    );

    // Deactivate then re-activate: the webhook is registered again.
    let before = fake.requests_to("/setWebhook").len();
    app.put(
        &format!("/api/v1/channels/{id}"),
        &admin,
        json!({"isActive": false}),
    )
    .await;
    app.put(
        &format!("/api/v1/channels/{id}"),
        &admin,
        json!({"isActive": true}),
    )
    .await;
    let again = app
        .eventually(Duration::from_secs(20), || async {
            (fake.requests_to("/setWebhook").len() > before).then_some(())
        })
        .await;
    assert!(again.is_some(), "re-activation registers the webhook");
    app.cleanup().await;
}

/// The guide's example body, exactly as the frontend posts it (with a real
/// agent id for its placeholder).
fn guide_whatsapp(agent: &str) -> Value {
    json!({
      "type": "WHATSAPP",
      "name": "WhatsApp Business",
      "config": {
        "phoneNumber": "+1234567890",
        "accessToken": "token_here",
        "webhookUrl": "https://your-domain.com/webhooks/whatsapp"
      },
      "agentId": agent,
      "isActive": true
    })
}

fn missing_fields(channel: &Value) -> Vec<String> {
    channel["setup"]["missing"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_guides_bodies_are_accepted_for_every_type_with_what_is_missing() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;

    let wa = create_channel(&app, &admin, guide_whatsapp(&agent)).await;
    assert_eq!(wa["status"], "NEEDS_SETUP", "{wa}");
    assert_eq!(
        missing_fields(&wa),
        vec!["config.phoneNumberId", "config.appSecret"]
    );
    for m in wa["setup"]["missing"].as_array().into_iter().flatten() {
        assert!(!m["why"].as_str().unwrap_or_default().is_empty(), "{m}");
        assert!(
            !m["whereToFindIt"].as_str().unwrap_or_default().is_empty(),
            "{m}"
        );
    }
    assert!(
        wa["setup"]["missing"][1]["whereToFindIt"]
            .as_str()
            .unwrap_or_default()
            .contains("App secret")
    );
    // The form's webhook URL is ignored; the platform's own is shown and
    // the steps say where to paste it.
    assert!(wa["config"].get("webhookUrl").is_none(), "{wa}");
    assert_eq!(
        wa["webhookUrl"],
        "https://bot.example.com/api/v1/webhooks/whatsapp"
    );
    let steps = wa["setup"]["steps"].to_string();
    assert!(
        steps.contains("https://bot.example.com/api/v1/webhooks/whatsapp"),
        "{steps}"
    );
    assert_eq!(wa["setup"]["accountConfirmed"], false);
    assert_eq!(wa["config"]["accessToken"], "****here");
    assert_eq!(wa["agentId"], agent.as_str());

    let fb = create_channel(
        &app,
        &admin,
        json!({"type": "FACEBOOK", "name": "Facebook Page", "config": {"pageId": "PAGE_1", "accessToken": "page-token-1", "webhookUrl": "https://your-domain.com/webhooks/facebook"}, "isActive": true}),
    )
    .await;
    assert_eq!(fb["status"], "NEEDS_SETUP");
    assert_eq!(missing_fields(&fb), vec!["config.appSecret"]);
    assert_eq!(fb["config"]["pageAccessToken"], "****en-1");

    let ig = create_channel(
        &app,
        &admin,
        json!({"type": "INSTAGRAM", "name": "Instagram", "config": {"accessToken": "ig-token-1"}, "isActive": true}),
    )
    .await;
    assert_eq!(
        missing_fields(&ig),
        vec!["config.instagramAccountId", "config.appSecret"]
    );

    let tg = create_channel(
        &app,
        &admin,
        json!({"type": "TELEGRAM", "name": "Telegram Bot", "config": {"botToken": "123456:AAE-guide_token"}, "isActive": true}),
    )
    .await;
    assert_eq!(tg["status"], "PENDING");
    assert!(missing_fields(&tg).is_empty());
    let tg_id = tg["id"].as_str().unwrap_or_default().to_owned();
    let live = app
        .eventually(Duration::from_secs(30), || async {
            let c = app.get(&format!("/api/v1/channels/{tg_id}"), &admin).await;
            (c.body["status"] == "ACTIVE").then_some(c.body)
        })
        .await;
    assert!(live.is_some(), "the webhook registration makes it ACTIVE");
    assert!(
        !fake
            .requests_to("/bot123456:AAE-guide_token/setWebhook")
            .is_empty()
    );

    let web = create_channel(
        &app,
        &admin,
        json!({"type": "WEBSITE", "name": "Website chat", "config": {}, "agentId": agent, "isActive": true}),
    )
    .await;
    assert_eq!(web["status"], "ACTIVE");
    assert!(missing_fields(&web).is_empty());
    assert!(
        web["setup"]["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("any website"),
        "{web}"
    );
    assert!(
        web["publicKey"]
            .as_str()
            .unwrap_or_default()
            .starts_with("pk_")
    );

    // Malformed values are still a 400 naming the field.
    let r = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"type": "TELEGRAM", "name": "x", "config": {"botToken": "not-a-token"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "config.botToken");
    let r = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"type": "FACEBOOK", "name": "x", "config": {"pageId": "page 1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "config.pageId");
    app.cleanup().await;
}

#[tokio::test]
async fn setup_is_completed_by_put_and_resolved_by_the_test_job() {
    let (app, fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    let mut socket = connect(
        &app.base,
        "/",
        json!({ "token": admin.token, "tenantId": admin.tenant_id }),
    )
    .await
    .joined()
    .await;

    // WhatsApp: the business account id lets the test find the number's id.
    let wa = create_channel(&app, &admin, guide_whatsapp(&agent)).await;
    let wa_id = wa["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .put(
            &format!("/api/v1/channels/{wa_id}"),
            &admin,
            json!({"config": {"businessAccountId": "WABA1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "NEEDS_SETUP");
    fake.respond(
        "/v21.0/WABA1/phone_numbers",
        200,
        json!({"data": [
            {"id": "PN_OTHER", "display_phone_number": "+1 555-000-0000", "verified_name": "Other"},
            {"id": "PN_GUIDE", "display_phone_number": "+1 234-567-890", "verified_name": "Acme Shop"}]}),
    );
    let job = test_channel(&app, &admin, &wa_id).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["result"]["status"], "NEEDS_SETUP", "{job}");
    assert_eq!(job["result"]["accountConfirmed"], true, "{job}");
    assert_eq!(job["result"]["missing"], json!(["config.appSecret"]));
    let call = &fake.requests_to("/v21.0/WABA1/phone_numbers")[0];
    assert_eq!(call.authorization.as_deref(), Some("Bearer token_here"));
    // The PUT announced itself too; the test's event carries what it found.
    let mut event = Value::Null;
    while event["config"]["phoneNumberId"] != "PN_GUIDE" {
        event = socket
            .next_named("channel-updated", 15)
            .await
            .expect("the test emits channel-updated");
    }
    assert_eq!(event["id"], wa_id.as_str());
    assert_eq!(event["status"], "NEEDS_SETUP");
    assert!(
        !event.to_string().contains("token_here"),
        "no secrets in events"
    );
    let ch = app.get(&format!("/api/v1/channels/{wa_id}"), &admin).await;
    assert_eq!(ch.body["config"]["phoneNumberId"], "PN_GUIDE");
    assert_eq!(ch.body["config"]["verifiedName"], "Acme Shop");
    assert_eq!(missing_fields(&ch.body), vec!["config.appSecret"]);
    assert_eq!(ch.body["setup"]["accountConfirmed"], true);
    // The last piece, then Test: live.
    let r = app
        .put(
            &format!("/api/v1/channels/{wa_id}"),
            &admin,
            json!({"config": {"appSecret": "wa-app-secret"}}),
        )
        .await;
    assert_eq!(r.body["status"], "PENDING", "{:?}", r.body);
    assert!(missing_fields(&r.body).is_empty());
    let job = test_channel(&app, &admin, &wa_id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    assert_eq!(
        fake.requests_to("/v21.0/PN_GUIDE")[0].query("fields"),
        Some("id,display_phone_number,verified_name")
    );
    // Meta's deliveries for the number now reach the channel.
    let r = post_meta(
        &app,
        "/api/v1/webhooks/whatsapp",
        &whatsapp_text("PN_GUIDE", "5511999990000", "wamid.G1", "hello"),
        Some("wa-app-secret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Messenger: the page id and name come from the page token.
    fake.add_account("page-token-x", json!({"id": "PAGE_X", "name": "Acme Page"}));
    let fb = create_channel(
        &app,
        &admin,
        json!({"type": "FACEBOOK", "name": "FB", "config": {"accessToken": "page-token-x", "appSecret": "fb-secret"}}),
    )
    .await;
    assert_eq!(missing_fields(&fb), vec!["config.pageId"]);
    let fb_id = fb["id"].as_str().unwrap_or_default().to_owned();
    let job = test_channel(&app, &admin, &fb_id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    let ch = app.get(&format!("/api/v1/channels/{fb_id}"), &admin).await;
    assert_eq!(ch.body["config"]["pageId"], "PAGE_X");
    assert_eq!(ch.body["config"]["pageName"], "Acme Page");
    assert_eq!(ch.body["status"], "ACTIVE");

    // Instagram: the account linked to the page.
    fake.respond(
        "/v21.0/PAGE_IG",
        200,
        json!({"id": "PAGE_IG", "instagram_business_account": {"id": "IG_77", "username": "acme_ig"}}),
    );
    let ig = create_channel(
        &app,
        &admin,
        json!({"type": "INSTAGRAM", "name": "IG", "config": {"pageId": "PAGE_IG", "accessToken": "ig-page-token", "appSecret": "ig-secret"}}),
    )
    .await;
    let ig_id = ig["id"].as_str().unwrap_or_default().to_owned();
    let job = test_channel(&app, &admin, &ig_id).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    let ch = app.get(&format!("/api/v1/channels/{ig_id}"), &admin).await;
    assert_eq!(ch.body["config"]["instagramAccountId"], "IG_77");
    assert_eq!(ch.body["config"]["username"], "acme_ig");
    assert_eq!(
        fake.requests_to("/v21.0/PAGE_IG")[0].query("fields"),
        Some("instagram_business_account{id,username}")
    );

    // A token of another page than the one typed: ERROR, nothing claimed.
    fake.add_account("page-token-y", json!({"id": "PAGE_Y", "name": "Y"}));
    let wrong = create_channel(
        &app,
        &admin,
        json!({"type": "FACEBOOK", "name": "Wrong", "config": {"pageId": "PAGE_THEIRS", "accessToken": "page-token-y", "appSecret": "s"}}),
    )
    .await;
    let wrong_id = wrong["id"].as_str().unwrap_or_default().to_owned();
    let job = test_channel(&app, &admin, &wrong_id).await;
    assert_eq!(job["result"]["status"], "ERROR", "{job}");
    let ch = app
        .get(&format!("/api/v1/channels/{wrong_id}"), &admin)
        .await;
    assert_eq!(ch.body["status"], "ERROR");
    assert!(
        ch.body["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to 'Y' (id PAGE_Y), not to page PAGE_THEIRS"),
        "{:?}",
        ch.body
    );
    assert_eq!(ch.body["setup"]["accountConfirmed"], false);
    // A token the provider does not know: its words.
    let unknown = create_channel(
        &app,
        &admin,
        json!({"type": "FACEBOOK", "name": "Unknown", "config": {"accessToken": "expired-token", "appSecret": "s"}}),
    )
    .await;
    let job = test_channel(&app, &admin, unknown["id"].as_str().unwrap_or_default()).await;
    assert_eq!(job["result"]["status"], "ERROR", "{job}");
    assert!(
        job["result"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Invalid OAuth access token"),
        "{job}"
    );
    app.cleanup().await;
}

// ---- deliver_message ----

struct Thread {
    tenant: TenantId,
    channel_id: String,
    conversation_id: String,
}

/// A conversation with `external_user` on a channel created through the api.
async fn thread(app: &TestApp, s: &Session, channel: &Value, external_user: &str) -> Thread {
    let tenant = TenantId::from_trusted(s.tenant_id.clone());
    let channel_id = channel["id"].as_str().unwrap_or_default().to_owned();
    let channel_type: ChannelType =
        serde_json::from_value(channel["type"].clone()).expect("channel type");
    let now = Utc::now();
    let contact = Contact {
        id: new_id(),
        tenant_id: tenant.clone(),
        channel_id: channel_id.clone(),
        channel_type,
        external_id: external_user.to_owned(),
        name: None,
        username: None,
        phone: None,
        created_at: now,
        updated_at: now,
    };
    app.platform
        .db
        .scoped::<Contact>(&tenant)
        .insert(&contact)
        .await
        .expect("contact");
    let conversation = Conversation {
        id: new_id(),
        tenant_id: tenant.clone(),
        channel_id: channel_id.clone(),
        channel_type,
        agent_id: None,
        contact_id: contact.id,
        external_user_id: external_user.to_owned(),
        contact_name: None,
        status: ConversationStatus::Active,
        assigned_to: None,
        last_message_preview: None,
        last_message_at: None,
        unread_count: 0,
        message_count: 0,
        resolved_at: None,
        handoff: None,
        contact_seen: None,
        created_at: now,
        updated_at: now,
    };
    app.platform
        .db
        .scoped::<Conversation>(&tenant)
        .insert(&conversation)
        .await
        .expect("conversation");
    Thread {
        tenant,
        channel_id,
        conversation_id: conversation.id,
    }
}

/// Stores a QUEUED outbound message and queues its delivery; answers
/// (message id, job id).
async fn outbound(app: &TestApp, t: &Thread, sender: SenderType, text: &str) -> (String, String) {
    let now = Utc::now();
    let message = Message {
        id: new_id(),
        tenant_id: t.tenant.clone(),
        conversation_id: t.conversation_id.clone(),
        channel_id: t.channel_id.clone(),
        direction: MessageDirection::Outbound,
        sender_type: sender,
        sender_id: None,
        content: text.to_owned(),
        status: MessageStatus::Queued,
        external_message_id: None,
        error: None,
        reply_to: None,
        dedup_key: None,
        metadata: bson::Document::new(),
        billed_tokens: None,
        created_at: now,
        updated_at: now,
    };
    app.platform
        .db
        .scoped::<Message>(&t.tenant)
        .insert(&message)
        .await
        .expect("message");
    let jobs = JobClient::connect(&app.platform).await.expect("job client");
    let job = jobs
        .enqueue(
            &t.tenant,
            Requester::System,
            DeliverMessage {
                message_id: message.id.clone(),
                conversation_id: t.conversation_id.clone(),
                channel_id: t.channel_id.clone(),
            },
        )
        .await
        .expect("queued");
    (message.id, job.id)
}

async fn message(app: &TestApp, t: &Thread, id: &str) -> Message {
    app.platform
        .db
        .scoped::<Message>(&t.tenant)
        .find_by_id(id)
        .await
        .expect("read")
        .expect("message exists")
}

async fn setup(fake_extra: &[(&str, &str)]) -> (TestApp, FakeProviders, Session) {
    let (app, fake) = app_with_fake(fake_extra).await;
    let admin = app.register("Acme").await;
    (app, fake, admin)
}

#[tokio::test]
async fn delivery_speaks_each_providers_api() {
    let (app, fake, admin) = setup(&[]).await;
    let wa = create_channel(&app, &admin, whatsapp_body("PN1")).await;
    let fb = create_channel(&app, &admin, json!({"type": "FACEBOOK", "name": "Page", "config": {"pageId": "PAGE1", "accessToken": "page-token-1", "appSecret": "fb-secret"}})).await;
    let ig = create_channel(&app, &admin, json!({"type": "INSTAGRAM", "name": "IG", "config": {"instagramAccountId": "IG1", "accessToken": "ig-token-1", "appSecret": "ig-secret"}})).await;
    let tg = create_channel(
        &app,
        &admin,
        json!({"type": "TELEGRAM", "name": "TG", "config": {"botToken": "999:tg-token"}}),
    )
    .await;

    let cases = [
        (wa, "5511999990000"),
        (fb, "PSID-1"),
        (ig, "IGSID-1"),
        (tg, "111"),
    ];
    let mut ids = Vec::new();
    for (channel, user) in &cases {
        let t = thread(&app, &admin, channel, user).await;
        let (mid, job) = outbound(&app, &t, SenderType::Human, "Hello there").await;
        let done = job_done(&app, &admin, &job).await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        let m = message(&app, &t, &mid).await;
        assert_eq!(m.status, MessageStatus::Sent, "{m:?}");
        ids.push(m.external_message_id.unwrap_or_default());
    }

    let wa_call = &fake.requests_to("/v21.0/PN1/messages")[0];
    assert_eq!(
        wa_call.authorization.as_deref(),
        Some("Bearer EAAG-whatsapp-token-9876")
    );
    assert_eq!(
        wa_call.body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "5511999990000", "type": "text", "text": {"body": "Hello there"}})
    );
    assert!(ids[0].starts_with("wamid.fake"));

    let fb_call = &fake.requests_to("/v21.0/me/messages")[0];
    assert_eq!(fb_call.query("access_token"), Some("page-token-1"));
    assert_eq!(
        fb_call.body,
        json!({"recipient": {"id": "PSID-1"}, "messaging_type": "RESPONSE", "message": {"text": "Hello there"}})
    );
    assert!(ids[1].starts_with("m_fake"));

    let ig_call = &fake.requests_to("/v21.0/IG1/messages")[0];
    assert_eq!(ig_call.authorization.as_deref(), Some("Bearer ig-token-1"));
    assert_eq!(
        ig_call.body,
        json!({"recipient": {"id": "IGSID-1"}, "message": {"text": "Hello there"}})
    );

    let tg_call = &fake.requests_to("/bot999:tg-token/sendMessage")[0];
    assert_eq!(tg_call.body, json!({"chat_id": 111, "text": "Hello there"}));
    assert!(!ids[3].is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn delivery_retries_5xx_fails_4xx_at_once_and_drops_after_takeover() {
    let (app, fake, admin) = setup(&[]).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let wa = create_channel(&app, &admin, whatsapp_body("PN2")).await;
    let t = thread(&app, &admin, &wa, "5511").await;

    // 500 then success: retried, delivered once.
    fake.fail_next(
        "/PN2/messages",
        1,
        500,
        json!({"error": {"message": "temporary", "code": 2}}),
    );
    let (mid, job) = outbound(&app, &t, SenderType::Agent, "first").await;
    let done = job_done(&app, &admin, &job).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(fake.requests_to("/PN2/messages").len(), 2);
    assert_eq!(message(&app, &t, &mid).await.status, MessageStatus::Sent);

    // The 24-hour window: 400, FAILED with the provider's error, one call.
    fake.fail_next(
        "/PN2/messages",
        1,
        400,
        json!({"error": {"message": "Re-engagement message", "type": "OAuthException", "code": 131047,
                         "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}}}),
    );
    let before = fake.requests_to("/PN2/messages").len();
    let (mid, job) = outbound(&app, &t, SenderType::Human, "late").await;
    let done = job_done(&app, &admin, &job).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(fake.requests_to("/PN2/messages").len(), before + 1);
    let m = message(&app, &t, &mid).await;
    assert_eq!(m.status, MessageStatus::Failed);
    assert!(
        m.error.as_deref().unwrap_or_default().contains("131047"),
        "{m:?}"
    );
    assert!(
        m.error.as_deref().unwrap_or_default().contains("24 hours"),
        "{m:?}"
    );

    // A second job for an already sent message sends nothing.
    let jobs = JobClient::connect(&app.platform).await.expect("client");
    let sent_id = fake.requests_to("/PN2/messages").len();
    let (first_id, _) = outbound(&app, &t, SenderType::Human, "once").await;
    app.eventually(Duration::from_secs(20), || async {
        (message(&app, &t, &first_id).await.status == MessageStatus::Sent).then_some(())
    })
    .await
    .expect("sent");
    let dup = jobs
        .enqueue(
            &t.tenant,
            Requester::System,
            DeliverMessage {
                message_id: first_id.clone(),
                conversation_id: t.conversation_id.clone(),
                channel_id: t.channel_id.clone(),
            },
        )
        .await
        .expect("queued");
    let done = job_done(&app, &admin, &dup.id).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(
        fake.requests_to("/PN2/messages").len(),
        sent_id + 1,
        "sent exactly once"
    );

    // A human took over: the bot's reply is dropped, a staff reply is sent.
    app.platform
        .db
        .scoped::<Conversation>(&t.tenant)
        .update_by_id(
            &t.conversation_id,
            doc! { "$set": { "status": "ASSIGNED" } },
        )
        .await
        .expect("assign");
    let calls = fake.requests_to("/PN2/messages").len();
    let (bot, job) = outbound(&app, &t, SenderType::Agent, "bot says").await;
    job_done(&app, &admin, &job).await;
    assert_eq!(message(&app, &t, &bot).await.status, MessageStatus::Dropped);
    let (human, job) = outbound(&app, &t, SenderType::Human, "staff says").await;
    job_done(&app, &admin, &job).await;
    assert_eq!(message(&app, &t, &human).await.status, MessageStatus::Sent);
    let after = fake.requests_to("/PN2/messages");
    assert_eq!(after.len(), calls + 1);
    assert_eq!(after[calls].body["text"]["body"], "staff says");
    app.cleanup().await;
}

#[tokio::test]
async fn delivery_keeps_conversation_order_when_an_earlier_message_is_retried() {
    let (app, fake, admin) = setup(&[]).await;
    let tg = create_channel(
        &app,
        &admin,
        json!({"type": "TELEGRAM", "name": "TG", "config": {"botToken": "42:order-token"}}),
    )
    .await;
    let t = thread(&app, &admin, &tg, "777").await;
    fake.fail_next(
        "/sendMessage",
        1,
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1"}),
    );
    let (a, ja) = outbound(&app, &t, SenderType::Human, "one").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (b, jb) = outbound(&app, &t, SenderType::Human, "two").await;
    job_done(&app, &admin, &ja).await;
    job_done(&app, &admin, &jb).await;
    assert_eq!(message(&app, &t, &a).await.status, MessageStatus::Sent);
    assert_eq!(message(&app, &t, &b).await.status, MessageStatus::Sent);
    let texts: Vec<String> = fake
        .requests_to("/sendMessage")
        .iter()
        .filter(|r| r.body["chat_id"] == 777)
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        vec!["one", "one", "two"],
        "the 429 is retried before the second message goes"
    );
    app.cleanup().await;
}

/// A message a crashed worker left `SENDING` long ago (after its provider
/// call), and the retry of its delivery job, as the queue would run it.
async fn left_in_doubt(
    app: &TestApp,
    s: &Session,
    t: &Thread,
    sender: SenderType,
) -> (String, String) {
    let (mid, job) = outbound(app, t, sender, "maybe sent").await;
    job_done(app, s, &job).await;
    let stale = bson::DateTime::from_chrono(Utc::now() - chrono::Duration::minutes(5));
    app.platform
        .db
        .scoped::<Message>(&t.tenant)
        .update_by_id(
            &mid,
            doc! { "$set": { "status": "SENDING", "updatedAt": stale } },
        )
        .await
        .expect("left sending");
    let jobs = JobClient::connect(&app.platform).await.expect("client");
    let retry = jobs
        .enqueue(
            &t.tenant,
            Requester::System,
            DeliverMessage {
                message_id: mid.clone(),
                conversation_id: t.conversation_id.clone(),
                channel_id: t.channel_id.clone(),
            },
        )
        .await
        .expect("queued");
    (mid, retry.id)
}

#[tokio::test]
async fn a_reply_left_sending_by_a_crash_is_sent_again_by_default() {
    let (app, fake, admin) = setup(&[]).await;
    let wa = create_channel(&app, &admin, whatsapp_body("PN9")).await;
    let t = thread(&app, &admin, &wa, "5599").await;
    let (mid, retry) = left_in_doubt(&app, &admin, &t, SenderType::Agent).await;
    let done = job_done(&app, &admin, &retry).await;
    assert_eq!(done["result"]["status"], "SENT", "{done}");
    assert_eq!(done["result"]["resent"], true, "{done}");
    let m = message(&app, &t, &mid).await;
    assert_eq!(m.status, MessageStatus::Sent);
    assert_eq!(
        fake.requests_to("/PN9/messages").len(),
        2,
        "sent (again): a rare duplicate beats a customer left unanswered"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn at_most_once_fails_an_interrupted_reply_and_hands_the_customer_to_staff() {
    let (app, fake, admin) = setup(&[]).await;
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &admin,
            json!({ "settings": { "deliveryGuarantee": "atMostOnce" } }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["deliveryGuarantee"], "atMostOnce");
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", admin.tenant_id),
            &admin,
            json!({ "settings": { "deliveryGuarantee": "sometimes" } }),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "settings.deliveryGuarantee");

    let wa = create_channel(&app, &admin, whatsapp_body("PN9")).await;
    let t = thread(&app, &admin, &wa, "5599").await;
    let (mid, retry) = left_in_doubt(&app, &admin, &t, SenderType::Agent).await;
    let done = job_done(&app, &admin, &retry).await;
    assert_eq!(done["result"]["status"], "FAILED", "{done}");
    let m = message(&app, &t, &mid).await;
    assert_eq!(m.status, MessageStatus::Failed);
    assert!(
        m.error
            .as_deref()
            .unwrap_or_default()
            .contains("at most once"),
        "{m:?}"
    );
    assert_eq!(
        fake.requests_to("/PN9/messages").len(),
        1,
        "never sent twice"
    );

    let c = app
        .get(
            &format!("/api/v1/conversations/{}", t.conversation_id),
            &admin,
        )
        .await;
    assert_eq!(c.status, 200, "{:?}", c.body);
    let conversation = if c.body["conversation"].is_object() {
        &c.body["conversation"]
    } else {
        &c.body
    };
    assert_eq!(conversation["status"], "WAITING", "{}", c.body);
    assert_eq!(
        conversation["handoff"]["reason"], "delivery_failed",
        "{}",
        c.body
    );
    assert_eq!(conversation["handoff"]["messageId"], mid.as_str());
    assert!(
        conversation["handoff"]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be delivered"),
        "{}",
        c.body
    );
    app.cleanup().await;
}
