//! Website widget: public endpoints scoped by the channel's public key and
//! allowed origins (CORS for those origins only), visitor sessions with
//! signed tokens, rate limits, the visitor's message going through the
//! shared inbound path, and the reply reaching the visitor live.

use std::time::Duration;

use bson::doc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use aigentable_platform::ids::TenantId;
use aigentable_platform::model::{InboundItem, WebhookEvent};
use aigentable_tests::fake_providers::{app_with_fake, create_agent, create_channel};
use aigentable_tests::{Reply, Session, TestApp};

const SITE: &str = "https://shop.example.com";

async fn widget(app: &TestApp, s: &Session, agent: Option<&str>) -> String {
    let mut body = json!({"type": "WEBSITE", "name": "Site chat",
        "config": {"allowedOrigins": [SITE], "welcomeMessage": "Hi, how can we help?", "title": "Shop", "theme": {"color": "#0a7"}}});
    if let Some(a) = agent {
        body["agentId"] = json!(a);
    }
    let c = create_channel(app, s, body).await;
    c["publicKey"].as_str().unwrap_or_default().to_owned()
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    origin: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = app.http.request(method, app.url(path));
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestApp::reply(req.send().await.expect("sent")).await
}

async fn session(app: &TestApp, key: &str) -> (String, String) {
    let r = call(
        app,
        reqwest::Method::POST,
        &format!("/api/v1/widget/{key}/sessions"),
        Some(SITE),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (
        r.body["visitorId"].as_str().unwrap_or_default().to_owned(),
        r.body["token"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn origins_sessions_and_the_script() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let key = widget(&app, &admin, None).await;
    let sessions = format!("/api/v1/widget/{key}/sessions");

    // Allowed origin: a session, CORS for that origin.
    let r = call(
        &app,
        reqwest::Method::POST,
        &sessions,
        Some(SITE),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(SITE)
    );
    assert_eq!(r.body["settings"]["welcomeMessage"], "Hi, how can we help?");
    assert_eq!(r.body["settings"]["theme"]["color"], "#0a7");
    let visitor = r.body["visitorId"].as_str().unwrap_or_default().to_owned();
    let token = r.body["token"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty());

    // A returning visitor proves their id with the earlier token.
    let r = call(
        &app,
        reqwest::Method::POST,
        &sessions,
        Some(SITE),
        None,
        Some(json!({"visitorToken": token})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["visitorId"], visitor.as_str());
    // Naming someone's visitor id gets a new visitor, never theirs; so
    // does a token that does not verify.
    for body in [
        json!({"visitorId": visitor}),
        json!({"visitorToken": format!("{token}x")}),
    ] {
        let r = call(
            &app,
            reqwest::Method::POST,
            &sessions,
            Some(SITE),
            None,
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let issued = r.body["visitorId"].as_str().unwrap_or_default();
        assert!(issued.starts_with("v_") && issued != visitor, "{issued}");
    }
    // Widget bodies are small.
    let r = call(
        &app,
        reqwest::Method::POST,
        &sessions,
        Some(SITE),
        None,
        Some(json!({"visitorToken": "x".repeat(20_000)})),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);

    // Other origins, no origin, unknown keys: refused, no CORS grant.
    let r = call(
        &app,
        reqwest::Method::POST,
        &sessions,
        Some("https://evil.example.com"),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = call(
        &app,
        reqwest::Method::POST,
        &sessions,
        None,
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/widget/pk_nope/sessions",
        Some(SITE),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Preflight: granted to the allowed origin only.
    let pre = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                app.url(&format!("/api/v1/widget/{key}/messages")),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = pre(SITE).await.expect("sent");
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(SITE)
    );
    let evil = pre("https://evil.example.com").await.expect("sent");
    assert!(evil.headers().get("access-control-allow-origin").is_none());

    // A token is needed, and only works for its own widget.
    let r = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/widget/{key}/messages"),
        Some(SITE),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let other_key = widget(&app, &admin, None).await;
    let (_, other_token) = session(&app, &other_key).await;
    let r = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/widget/{key}/messages"),
        Some(SITE),
        Some(&other_token),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The script.
    let js = app
        .http
        .get(app.url("/widget.js"))
        .send()
        .await
        .expect("sent");
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .contains("javascript")
    );
    let text = js.text().await.unwrap_or_default();
    assert!(text.contains("/api/v1/widget/") && text.contains("/widget"));
    app.cleanup().await;
}

/// A website channel created with an empty config works on any site at
/// once, and says so.
#[tokio::test]
async fn a_widget_without_allowed_origins_works_on_any_site() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let c = create_channel(
        &app,
        &admin,
        json!({"type": "WEBSITE", "name": "Website chat", "config": {}, "isActive": true}),
    )
    .await;
    assert_eq!(c["status"], "ACTIVE");
    assert!(c["setup"]["warnings"].to_string().contains("any website"));
    let key = c["publicKey"].as_str().unwrap_or_default().to_owned();
    for origin in ["https://anyone.example.org", "http://localhost:8080"] {
        let r = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/widget/{key}/sessions"),
            Some(origin),
            None,
            Some(json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(
            r.headers
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(origin)
        );
        let token = r.body["token"].as_str().unwrap_or_default().to_owned();
        let r = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/widget/{key}/messages"),
            Some(origin),
            Some(&token),
            Some(json!({"text": "hello from anywhere"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    // Restricting is one field away.
    let id = c["id"].as_str().unwrap_or_default();
    let r = app
        .put(
            &format!("/api/v1/channels/{id}"),
            &admin,
            json!({"config": {"allowedOrigins": [SITE]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["setup"]["warnings"].as_array().map(Vec::len),
        Some(0)
    );
    let r = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/widget/{key}/sessions"),
        Some("https://anyone.example.org"),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    app.cleanup().await;
}

#[tokio::test]
async fn visitor_messages_go_through_the_inbound_path_and_are_rate_limited() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let key = widget(&app, &admin, None).await;
    let (visitor, token) = session(&app, &key).await;
    let messages = format!("/api/v1/widget/{key}/messages");

    let r = call(
        &app,
        reqwest::Method::POST,
        &messages,
        Some(SITE),
        Some(&token),
        Some(json!({"text": "  "})),
    )
    .await;
    assert_eq!(r.body["details"]["field"], "text");
    let r = call(
        &app,
        reqwest::Method::POST,
        &messages,
        Some(SITE),
        Some(&token),
        Some(json!({"text": "Do you ship abroad?", "clientMessageId": "client-0001"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["accepted"], true);
    // The widget retrying the same message: accepted once.
    let r = call(
        &app,
        reqwest::Method::POST,
        &messages,
        Some(SITE),
        Some(&token),
        Some(json!({"text": "Do you ship abroad?", "clientMessageId": "client-0001"})),
    )
    .await;
    assert_eq!(r.body["accepted"], false);

    // The worker stores what the widget queued.
    let pending = app.settled_by_workers(Duration::from_secs(20)).await;
    assert!(pending.is_empty(), "the workers ran every job: {pending:?}");
    let tenant = TenantId::from_trusted(admin.tenant_id.clone());
    let (events, _) = app
        .platform
        .db
        .scoped::<WebhookEvent>(&tenant)
        .find_page(
            doc! {},
            doc! { "createdAt": 1 },
            aigentable_platform::db::PageRequest { page: 1, limit: 10 },
        )
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].channel_type,
        aigentable_platform::model::ChannelType::Website
    );
    assert!(
        matches!(&events[0].items[0], InboundItem::Message { external_user_id, text, .. }
        if *external_user_id == visitor && text == "Do you ship abroad?")
    );
    // Per-visitor limit: 20 a minute, then 429 with Retry-After.
    let mut limited = None;
    for i in 0..25 {
        let r = call(
            &app,
            reqwest::Method::POST,
            &messages,
            Some(SITE),
            Some(&token),
            Some(json!({"text": format!("spam {i}")})),
        )
        .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let limited = limited.expect("the visitor is rate limited");
    assert!(limited.headers.get("retry-after").is_some());
    app.cleanup().await;
}

/// End to end with the inbound and reply handlers: the visitor writes, the
/// retrieval-only responder answers (with no documents it hands off to a
/// person), then a staff reply reaches the visitor live over the socket.
#[tokio::test]
async fn visitor_gets_replies_live() {
    let (app, _fake) = app_with_fake(&[]).await;
    let admin = app.register("Acme").await;
    let agent = create_agent(&app, &admin).await;
    let key = widget(&app, &admin, Some(&agent)).await;
    let (_, token) = session(&app, &key).await;
    let messages = format!("/api/v1/widget/{key}/messages");
    let r = call(
        &app,
        reqwest::Method::POST,
        &messages,
        Some(SITE),
        Some(&token),
        Some(json!({"text": "Hello, anyone there?"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // The automatic answer shows in the visitor's conversation.
    let (conv, answer) = app
        .eventually(Duration::from_secs(30), || async {
            let r = call(
                &app,
                reqwest::Method::GET,
                &messages,
                Some(SITE),
                Some(&token),
                None,
            )
            .await;
            let conv = r.body["conversationId"].as_str()?.to_owned();
            let answer = r.body["messages"]
                .as_array()?
                .iter()
                .find(|m| m["from"] != "visitor")?
                .clone();
            Some((conv, answer))
        })
        .await
        .expect("the visitor got an answer");
    assert!(
        matches!(answer["from"].as_str(), Some("bot" | "system")),
        "{answer}"
    );
    assert!(answer.get("tenantId").is_none() && answer.get("metadata").is_none());

    // Live: join the own conversation, then staff answers.
    let mut socket =
        aigentable_tests::socket::connect(&app.base, "/widget", json!({ "token": token })).await;
    let joined = socket.join_widget_conversation(20).await;
    assert!(
        joined
            .as_ref()
            .is_some_and(|a| a["ok"] == true && a["conversationId"] == conv.as_str()),
        "joined its own conversation: {joined:?}"
    );
    // A socket with a forged token is refused.
    let mut forged =
        aigentable_tests::socket::connect(&app.base, "/widget", json!({ "token": "x.y" })).await;
    assert!(
        forged.next_named("error", 5).await.is_some(),
        "forged visitor token refused"
    );

    let r = app
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            &admin,
            json!({"content": "Hi, Ada here. How can I help?"}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let live = socket
        .next_named("new-message", 30)
        .await
        .expect("live message");
    assert_eq!(live["from"], "agent", "{live}");
    assert_eq!(live["content"], "Hi, Ada here. How can I help?");
    assert!(
        live.get("tenantId").is_none(),
        "visitors get their own view: {live}"
    );
    let all = call(
        &app,
        reqwest::Method::GET,
        &messages,
        Some(SITE),
        Some(&token),
        None,
    )
    .await;
    let froms: Vec<&str> = all.body["messages"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["from"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(froms.first(), Some(&"visitor"), "{:?}", all.body);
    assert!(froms.contains(&"agent"), "{:?}", all.body);
    app.cleanup().await;
}
