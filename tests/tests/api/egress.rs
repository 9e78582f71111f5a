//! Server-side request forgery: with the production default
//! (`OUTBOUND_ALLOW_PRIVATE_NETWORKS` off) no outbound call a tenant can
//! steer reaches this machine or the platform's network, whatever spelling
//! of the address it uses. A canary server on 127.0.0.1 (and ::1) counts
//! every connection and must stay at zero, while each job or record ends
//! with an error saying the address is not allowed. Also: redirects are
//! never followed, provider answers are not echoed back, per-channel base
//! URLs need `CHANNEL_BASE_URL_OVERRIDES`, and a new base URL needs its
//! secret again.

use std::time::Duration;

use serde_json::{Value, json};

use aigentable_tests::canary::Canary;
use aigentable_tests::fake_providers::{create_channel, job_done, post_meta, whatsapp_text};
use aigentable_tests::{Session, TestApp, inbound, spawn_app_with};
use reqwest::StatusCode;

const REFUSED: &str = "address not allowed";
const STRICT: &[(&str, &str)] = &[
    ("OUTBOUND_ALLOW_PRIVATE_NETWORKS", "false"),
    ("CHANNEL_BASE_URL_OVERRIDES", "true"),
];

fn whatsapp(pnid: &str, base: &str) -> Value {
    json!({
        "type": "WHATSAPP", "name": format!("WA {pnid}"),
        "config": {"phoneNumberId": pnid, "accessToken": "EAAG-token-0001",
                   "appSecret": "wa-app-secret", "baseUrl": base},
        "isActive": true,
    })
}

fn ai_provider(base: &str, embedding_model: Option<&str>) -> Value {
    json!({
        "name": format!("AI at {base}"), "type": "OPENAI_COMPATIBLE",
        "baseUrl": format!("{base}/v1"), "apiKey": "sk-test-0001",
        "chatModel": "llama3.1", "embeddingModel": embedding_model,
    })
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn post_ok(app: &TestApp, s: &Session, path: &str, body: Value) -> Value {
    let r = app.post(path, s, body).await;
    assert!(r.status.is_success(), "{path}: {} {:?}", r.status, r.body);
    r.body
}

/// Channel tests, Telegram webhook registration and deliveries, for every
/// spelling of loopback and two internal addresses.
#[tokio::test]
async fn channel_calls_never_reach_internal_addresses() {
    let canary = Canary::start(r#"{"id":"1","secret":"internal"}"#).await;
    let app = spawn_app_with(STRICT).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Mallory").await;
    for (i, base) in canary.attack_urls().iter().enumerate() {
        if base.contains("[::1]") && !canary.ipv6 {
            continue;
        }
        // test_channel.
        let pnid = format!("77000{i}");
        let channel = create_channel(&app, &s, whatsapp(&pnid, base)).await;
        let channel_id = id(&channel);
        let r = post_ok(
            &app,
            &s,
            &format!("/api/v1/channels/{channel_id}/test"),
            json!({}),
        )
        .await;
        let job = job_done(&app, &s, r["jobId"].as_str().unwrap_or_default()).await;
        assert_eq!(job["result"]["status"], "ERROR", "{base}: {job}");
        let error = job["result"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(REFUSED), "{base}: {error}");
        let stored = app.get(&format!("/api/v1/channels/{channel_id}"), &s).await;
        assert!(
            stored.body["lastError"]
                .as_str()
                .unwrap_or_default()
                .contains(REFUSED),
            "{base}: {:?}",
            stored.body
        );

        // Delivery of a staff message into a conversation of that channel.
        // The number was confirmed earlier at the real provider (the claim
        // the test job makes); its base URL now points inside, and delivery
        // must still be refused.
        app.platform
            .db
            .unscoped::<bson::Document>(aigentable_platform::model::channel::COLLECTION)
            .update_one(
                bson::doc! { "_id": &channel_id },
                bson::doc! { "$set": { "routingKey": format!("whatsapp:{pnid}") } },
            )
            .await
            .expect("claim the number");
        let wamid = format!("wamid.{i}");
        let r = post_meta(
            &app,
            "/api/v1/webhooks/whatsapp",
            &whatsapp_text(&pnid, "15550009999", &wamid, "hello"),
            Some("wa-app-secret"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let conversation = app
            .eventually(Duration::from_secs(30), || async {
                let r = app
                    .get(&format!("/api/v1/conversations?channelId={channel_id}"), &s)
                    .await;
                r.body["conversations"][0]["id"].as_str().map(str::to_owned)
            })
            .await
            .expect("conversation from the webhook");
        let sent = post_ok(
            &app,
            &s,
            &format!("/api/v1/conversations/{conversation}/messages"),
            json!({"content": "we will call you"}),
        )
        .await;
        let job = job_done(&app, &s, sent["jobId"].as_str().unwrap_or_default()).await;
        let message = app
            .eventually(Duration::from_secs(30), || async {
                let r = app
                    .get(&format!("/api/v1/conversations/{conversation}"), &s)
                    .await;
                r.body["messages"]
                    .as_array()
                    .and_then(|m| {
                        m.iter()
                            .find(|m| m["content"] == "we will call you")
                            .cloned()
                    })
                    .filter(|m| m["status"] == "FAILED")
            })
            .await
            .unwrap_or_else(|| panic!("{base}: delivery did not fail: {job}"));
        assert!(
            message["error"]
                .as_str()
                .unwrap_or_default()
                .contains(REFUSED),
            "{base}: {message}"
        );

        // Telegram's setWebhook on channel creation.
        let telegram = create_channel(
            &app,
            &s,
            json!({"type": "TELEGRAM", "name": "Bot",
                   "config": {"botToken": format!("12345{i}:AAE-token"), "baseUrl": base}}),
        )
        .await;
        let telegram_id = id(&telegram);
        let failed = app
            .eventually(Duration::from_secs(30), || async {
                let r = app
                    .get(&format!("/api/v1/channels/{telegram_id}"), &s)
                    .await;
                (r.body["status"] == "ERROR").then_some(r.body)
            })
            .await
            .unwrap_or_else(|| panic!("{base}: webhook registration did not fail"));
        assert!(
            failed["lastError"]
                .as_str()
                .unwrap_or_default()
                .contains(REFUSED),
            "{base}: {failed}"
        );
    }
    assert_eq!(canary.hits(), 0, "the canary was contacted");
    app.cleanup().await;
}

/// AI provider tests, replies and embeddings.
#[tokio::test]
async fn ai_provider_calls_never_reach_internal_addresses() {
    let canary = Canary::start(r#"{"error":{"message":"internal"}}"#).await;
    let app = spawn_app_with(STRICT).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let mut reply_agents = 0;
    for base in canary.attack_urls() {
        if base.contains("[::1]") && !canary.ipv6 {
            continue;
        }
        // One tenant per address: its default provider embeds there.
        let s = app.register("Mallory").await;
        let provider = post_ok(
            &app,
            &s,
            "/api/v1/ai-providers",
            ai_provider(&base, Some("nomic-embed-text")),
        )
        .await;
        let provider_id = id(&provider);

        // test_ai_provider.
        let r = post_ok(
            &app,
            &s,
            &format!("/api/v1/ai-providers/{provider_id}/test"),
            json!({}),
        )
        .await;
        let job = job_done(&app, &s, r["jobId"].as_str().unwrap_or_default()).await;
        assert_eq!(job["result"]["ok"], false, "{base}: {job}");
        assert_eq!(job["result"]["retryable"], false, "{base}: {job}");
        let error = job["result"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(REFUSED), "{base}: {error}");

        // Embeddings at ingestion: the document fails with the reason.
        let doc = app
            .upload_text(&s, "faq.txt", "Refunds take 14 days.", None)
            .await;
        let failed = app
            .eventually(Duration::from_secs(60), || async {
                let r = app.get(&format!("/api/v1/documents/{doc}"), &s).await;
                (r.body["status"] == "FAILED").then_some(r.body)
            })
            .await
            .unwrap_or_else(|| panic!("{base}: ingestion did not fail"));
        assert!(
            failed["error"]
                .as_str()
                .unwrap_or_default()
                .contains(REFUSED),
            "{base}: {failed}"
        );

        // A reply: the agent falls back and the reply says why.
        let agent = post_ok(
            &app,
            &s,
            "/api/v1/agents",
            json!({"name": "Bot", "aiProviderId": provider_id}),
        )
        .await;
        let channel = inbound::channel(&app, &s, "Site", Some(&id(&agent))).await;
        inbound::deliver(
            &app,
            &s,
            &channel,
            vec![inbound::said("v1", "m1", "refunds?")],
        )
        .await;
        let reply = app
            .eventually(Duration::from_secs(60), || async {
                app.platform
                    .db
                    .scoped::<aigentable_platform::model::Message>(&inbound::tenant(&s))
                    .find_one(bson::doc! { "metadata.fallback": true })
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .unwrap_or_else(|| panic!("{base}: no fallback reply was stored"));
        let reason = reply.metadata.get_str("fallbackReason").unwrap_or_default();
        assert!(reason.contains(REFUSED), "{base}: {:?}", reply.metadata);
        reply_agents += 1;
    }
    assert!(reply_agents >= 9);
    assert_eq!(canary.hits(), 0, "the canary was contacted");
    app.cleanup().await;
}

/// Redirects are never followed, even where private networks are allowed.
#[tokio::test]
async fn redirects_are_refused() {
    let canary = Canary::start("{}").await;
    let redirector = Canary::redirecting_to(&format!("{}/v1/chat/completions", canary.url())).await;
    let app = spawn_app_with(&[
        ("OUTBOUND_ALLOW_PRIVATE_NETWORKS", "true"),
        ("CHANNEL_BASE_URL_OVERRIDES", "true"),
    ])
    .await;
    let s = app.register("Mallory").await;
    let channel = create_channel(&app, &s, whatsapp("880001", &redirector.url())).await;
    let r = post_ok(
        &app,
        &s,
        &format!("/api/v1/channels/{}/test", id(&channel)),
        json!({}),
    )
    .await;
    let job = job_done(&app, &s, r["jobId"].as_str().unwrap_or_default()).await;
    let error = job["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("redirect"), "{job}");

    let provider = post_ok(
        &app,
        &s,
        "/api/v1/ai-providers",
        ai_provider(&redirector.url(), None),
    )
    .await;
    let r = post_ok(
        &app,
        &s,
        &format!("/api/v1/ai-providers/{}/test", id(&provider)),
        json!({}),
    )
    .await;
    let job = job_done(&app, &s, r["jobId"].as_str().unwrap_or_default()).await;
    let error = job["result"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("redirect"), "{job}");

    assert!(redirector.hits() >= 2, "the redirector was not asked");
    assert_eq!(canary.hits(), 0, "a redirect was followed");
    app.cleanup().await;
}

/// With private networks allowed (tests, staging) the same calls do reach
/// the local server, which proves the canary can see them; only the asked
/// fields of its answer come back, never the whole body.
#[tokio::test]
async fn allowed_private_networks_reach_the_server_but_answers_are_not_echoed() {
    let canary = Canary::start(
        r#"{"id":"990001","verified_name":"Acme","display_phone_number":"+1 555","internal":"db-password-hunter2"}"#,
    )
    .await;
    let app = spawn_app_with(&[
        ("OUTBOUND_ALLOW_PRIVATE_NETWORKS", "true"),
        ("CHANNEL_BASE_URL_OVERRIDES", "true"),
    ])
    .await;
    let s = app.register("Acme").await;
    let channel = create_channel(&app, &s, whatsapp("990001", &canary.url())).await;
    let r = post_ok(
        &app,
        &s,
        &format!("/api/v1/channels/{}/test", id(&channel)),
        json!({}),
    )
    .await;
    let job = job_done(&app, &s, r["jobId"].as_str().unwrap_or_default()).await;
    assert_eq!(job["result"]["status"], "ACTIVE", "{job}");
    assert_eq!(job["result"]["provider"]["verifiedName"], "Acme");
    assert!(!job.to_string().contains("hunter2"), "{job}");
    assert!(canary.hits() >= 1);
    app.cleanup().await;
}

#[tokio::test]
async fn channel_base_urls_need_the_setting_and_their_token_again() {
    let app = spawn_app_with(&[]).await;
    let s = app.register("Acme").await;
    // Without CHANNEL_BASE_URL_OVERRIDES: 400 naming the field.
    let r = app
        .post(
            "/api/v1/channels",
            &s,
            whatsapp("110001", "https://graph.example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "config.baseUrl");
    assert!(
        r.message().contains("CHANNEL_BASE_URL_OVERRIDES"),
        "{:?}",
        r.body
    );
    app.cleanup().await;

    let app = spawn_app_with(&[("CHANNEL_BASE_URL_OVERRIDES", "true")]).await;
    let s = app.register("Acme").await;
    let channel = create_channel(&app, &s, whatsapp("110002", "https://graph.example.com")).await;
    let path = format!("/api/v1/channels/{}", id(&channel));
    // A new base without the token: refused, the stored token never moves.
    let r = app
        .put(
            &path,
            &s,
            json!({"config": {"baseUrl": "https://evil.example.com"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "config.accessToken");
    let r = app
        .put(
            &path,
            &s,
            json!({"config": {"baseUrl": "https://evil.example.com", "accessToken": "****0001"}}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "masked is not re-entered: {:?}",
        r.body
    );
    let r = app.get(&path, &s).await;
    assert_eq!(r.body["config"]["baseUrl"], "https://graph.example.com");
    // Same base, other fields: fine; new base with the token: fine.
    let r = app
        .put(
            &path,
            &s,
            json!({"name": "Renamed", "config": {"baseUrl": "https://graph.example.com"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .put(
            &path,
            &s,
            json!({"config": {"baseUrl": "https://other.example.com", "accessToken": "EAAG-new-token"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["config"]["baseUrl"], "https://other.example.com");
    app.cleanup().await;
}

#[tokio::test]
async fn ai_provider_base_url_changes_need_the_key_again() {
    let app = spawn_app_with(&[]).await;
    let s = app.register("Acme").await;
    let p = post_ok(
        &app,
        &s,
        "/api/v1/ai-providers",
        ai_provider("https://llm.example.com", None),
    )
    .await;
    let path = format!("/api/v1/ai-providers/{}", id(&p));
    for change in [
        json!({"baseUrl": "https://evil.example.com/v1"}),
        json!({"type": "OPENAI", "baseUrl": null}),
    ] {
        let r = app.put(&path, &s, change.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{change}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], "apiKey");
    }
    let r = app.get(&path, &s).await;
    assert_eq!(r.body["baseUrl"], "https://llm.example.com/v1");
    let r = app.put(&path, &s, json!({"name": "Renamed"})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .put(
            &path,
            &s,
            json!({"baseUrl": "https://llm2.example.com/v1", "apiKey": "sk-new-0002"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["baseUrl"], "https://llm2.example.com/v1");
    app.cleanup().await;
}
