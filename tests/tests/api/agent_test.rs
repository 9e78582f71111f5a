//! `POST /agents/{id}/test`: an agent answers a test question with its
//! knowledge, through the fake AI provider or the retrieval-only responder,
//! without storing anything in conversations.

use std::time::Duration;

use aigentable_platform::model::{Conversation, Message};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::inbound::{finished, tenant};
use aigentable_tests::{Session, TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

use crate::replies::default_provider;

const FAQ: &str = "Delivery. Orders placed before two o'clock ship the same day from our \
Utrecht warehouse. Delivery in the Netherlands takes one working day.";

async fn agent_with_faq(app: &TestApp, s: &Session) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            s,
            json!({ "name": "Helper", "model": "gpt-agent-test", "temperature": 0.2 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let doc = app
        .upload_text(s, "delivery-faq.txt", FAQ, Some(&agent))
        .await;
    app.wait_document_ready(s, &doc).await;
    agent
}

#[tokio::test]
async fn waiting_for_the_answer_returns_reply_sources_and_usage() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_faq(&app, &s).await;
    default_provider(&app, &s, &fake).await;
    fake.push_reply("Before two o'clock it ships the same day.");

    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/test?wait=true"),
            &s,
            json!({
                "message": "When do orders ship from the warehouse?",
                "history": [
                    { "role": "user", "content": "Hi there" },
                    { "role": "assistant", "content": "Hello! How can I help?" }
                ]
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["reply"], "Before two o'clock it ships the same day.");
    assert_eq!(r.body["sources"][0]["documentName"], "delivery-faq.txt");
    assert!(
        r.body["usage"]["totalTokens"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{:?}",
        r.body
    );
    assert!(r.body["latencyMs"].is_u64());
    assert_eq!(r.body["retrievalOnly"], false);
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(
        record["result"]["reply"],
        "Before two o'clock it ships the same day."
    );

    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 1);
    let body = &chats[0].body;
    assert_eq!(body["model"], "gpt-agent-test");
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, vec!["system", "user", "assistant", "user"]);
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Utrecht warehouse")),
        "{body}"
    );
    assert_eq!(body["messages"][1]["content"], "Hi there");

    // A test stores nothing in conversations; its tokens count as "test".
    let t = tenant(&s);
    assert_eq!(
        app.platform
            .db
            .scoped::<Message>(&t)
            .count(bson::doc! {})
            .await
            .unwrap_or(1),
        0
    );
    assert_eq!(
        app.platform
            .db
            .scoped::<Conversation>(&t)
            .count(bson::doc! {})
            .await
            .unwrap_or(1),
        0
    );
    let usage = app
        .platform
        .db
        .unscoped::<bson::Document>("token_usage")
        .count_documents(bson::doc! { "tenantId": &s.tenant_id, "purpose": "test" })
        .await
        .unwrap_or(0);
    assert_eq!(usage, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn without_waiting_the_test_is_a_job_and_without_a_provider_passages_answer() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_faq(&app, &s).await;

    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/test"),
            &s,
            json!({ "message": "How long does delivery in the Netherlands take?" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["status"], "QUEUED");
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    assert_eq!(record["result"]["retrievalOnly"], true);
    assert!(
        record["result"]["reply"]
            .as_str()
            .is_some_and(|t| t.contains("takes one working day") && t.contains("delivery-faq.txt")),
        "{record}"
    );

    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/test?wait=true"),
            &s,
            json!({ "message": "Do orders ship the same day?" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["retrievalOnly"], true);
    assert!(r.body["usage"].is_null());
    assert_eq!(r.body["sources"][0]["documentName"], "delivery-faq.txt");
    app.cleanup().await;
}

#[tokio::test]
async fn bad_test_requests_are_refused_with_the_field() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let r = app
        .post("/api/v1/agents", &s, json!({ "name": "Helper" }))
        .await;
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/api/v1/agents/{agent}/test");
    let r = app.post(&path, &s, json!({ "message": "  " })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "message");
    let r = app.post(&path, &s, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "message");
    let r = app
        .post(
            &path,
            &s,
            json!({ "message": "hi", "history": [{ "role": "system", "content": "x" }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["details"]["field"], "history[0].role",
        "{:?}",
        r.body
    );
    let r = app
        .post(
            "/api/v1/agents/65a1b2c3d4e5f6a7b8c9d0e1/test",
            &s,
            json!({ "message": "hi" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let other = app.register("Other").await;
    let r = app.post(&path, &other, json!({ "message": "hi" })).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.cleanup().await;
}

#[tokio::test]
async fn waiting_too_long_answers_504_naming_the_job() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let r = app
        .post("/api/v1/agents", &s, json!({ "name": "Slow" }))
        .await;
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    default_provider(&app, &s, &fake).await;
    // Slower than the api waits (30 s).
    fake.set_delay(Duration::from_secs(40));
    let started = std::time::Instant::now();
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/test?wait=true"),
            &s,
            json!({ "message": "Are you there?" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(29));
    let jobs = app.get("/api/v1/jobs?type=generate_reply", &s).await;
    let job = jobs.body["jobs"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(job.len(), 24, "{:?}", jobs.body);
    assert!(r.message().contains(&job), "{}", r.message());
    app.cleanup().await;
}
