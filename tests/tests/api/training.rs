//! `POST /agents/{id}/train`: documents are checked before anything is
//! queued, attached to the agent and re-indexed by the ingestion code; the
//! agent is TRAINING meanwhile (with agent-updated events) and ACTIVE
//! after.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigentable_jobs::events::{self, RealtimeEvent};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::{Session, TestApp, spawn_app};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upload(app: &TestApp, s: &Session, name: &str, text: &str) -> String {
    let id = app.upload_text(s, name, text, None).await;
    app.wait_document_ready(s, &id).await;
    id
}

/// Every realtime event the workers publish from now on.
async fn record_events(app: &TestApp) -> Arc<Mutex<Vec<RealtimeEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = redis::Client::open(aigentable_tests::redis_url()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(events::channel(app.platform.kv.namespace()))
        .await
        .expect("subscribe");
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(m) = messages.next().await {
            let payload: String = m.get_payload().unwrap_or_default();
            if let Ok(e) = serde_json::from_str::<RealtimeEvent>(&payload)
                && let Ok(mut v) = sink.lock()
            {
                v.push(e);
            }
        }
    });
    seen
}

#[tokio::test]
async fn training_attaches_reindexes_and_returns_to_active() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    // Embeddings on, so that training goes through the provider too.
    let r = app
        .post(
            "/api/v1/ai-providers",
            &s,
            json!({
                "name": "Local", "type": "OPENAI_COMPATIBLE", "baseUrl": fake.base_url(),
                "chatModel": "chat", "embeddingModel": "embed",
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .post("/api/v1/agents", &s, json!({ "name": "Support" }))
        .await;
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let refunds = upload(
        &app,
        &s,
        "refunds.txt",
        "Refunds are issued within 14 days of purchase.",
    )
    .await;
    let hours = upload(
        &app,
        &s,
        "hours.txt",
        "The shop opens at nine and closes at six.",
    )
    .await;
    // Not the agent's yet: an agent search finds nothing.
    let q = format!("/api/v1/search/documents?q=refunds&agentId={agent}");
    let r = app.get(&q, &s).await;
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(0));

    // Checked before anything is queued.
    let other = app.register("Globex").await;
    let foreign = upload(&app, &other, "x.txt", "Globex secret refunds").await;
    for ids in [
        json!(["0123456789abcdef01234567"]),
        json!(["not-an-id"]),
        json!([refunds, foreign]),
    ] {
        let r = app
            .post(
                &format!("/api/v1/agents/{agent}/train"),
                &s,
                json!({ "documentIds": ids }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ids}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], "documentIds");
    }
    let r = app
        .post(
            "/api/v1/agents/0123456789abcdef01234567/train",
            &s,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(&format!("/api/v1/agents/{agent}/train"), &other, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get(&format!("/api/v1/documents/{refunds}"), &s).await;
    assert_eq!(r.body["agentId"], Value::Null, "nothing attached yet");

    // Slow embeddings keep the agent visibly TRAINING.
    let events = record_events(&app).await;
    fake.clear_requests();
    fake.set_delay(Duration::from_millis(700));
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/train"),
            &s,
            json!({ "documentIds": [refunds, hours, refunds] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["agentId"], agent.as_str());
    assert_eq!(r.body["documentIds"].as_array().map(Vec::len), Some(2));
    let job_id = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    app.eventually(Duration::from_secs(20), || async {
        let r = app.get(&format!("/api/v1/agents/{agent}"), &s).await;
        (r.body["status"] == "TRAINING").then_some(())
    })
    .await
    .expect("agent is TRAINING while it trains");
    let job = app
        .eventually(Duration::from_secs(60), || async {
            let r = app.get(&format!("/api/v1/jobs/{job_id}"), &s).await;
            (r.body["status"] == "SUCCEEDED" || r.body["status"] == "FAILED").then_some(r.body)
        })
        .await
        .expect("training finished");
    assert_eq!(job["status"], "SUCCEEDED", "{job:?}");
    assert_eq!(job["type"], "train_agent");
    assert_eq!(job["result"]["documentsAttached"], 2);
    assert_eq!(job["result"]["documents"], 2);
    let r = app.get(&format!("/api/v1/agents/{agent}"), &s).await;
    assert_eq!(r.body["status"], "ACTIVE");

    // Attached and re-indexed with the agent: its search finds them, and
    // each was embedded again.
    for id in [&refunds, &hours] {
        let r = app.get(&format!("/api/v1/documents/{id}"), &s).await;
        assert_eq!(r.body["agentId"], agent.as_str());
        assert_eq!(r.body["status"], "READY");
    }
    let texts: Vec<String> = fake
        .embedding_requests()
        .iter()
        .flat_map(|r| r.inputs())
        .collect();
    assert!(texts.iter().any(|t| t.contains("Refunds are issued")));
    assert!(texts.iter().any(|t| t.contains("opens at nine")));
    fake.set_delay(Duration::ZERO);
    let r = app.get(&q, &s).await;
    assert_eq!(
        r.body["results"][0]["documentId"],
        refunds.as_str(),
        "{:?}",
        r.body
    );

    // The browsers saw it happen.
    let seen = events.lock().map(|v| v.clone()).unwrap_or_default();
    let agent_states: Vec<String> = seen
        .iter()
        .filter(|e| e.event == events::names::AGENT_UPDATED && e.data["id"] == agent.as_str())
        .map(|e| e.data["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(agent_states.first().map(String::as_str), Some("TRAINING"));
    assert_eq!(agent_states.last().map(String::as_str), Some("ACTIVE"));
    assert!(seen.iter().all(|e| e.tenant_id == s.tenant_id));
    assert!(
        seen.iter()
            .any(|e| e.event == events::names::DOCUMENT_UPDATED
                && e.data["id"] == refunds.as_str()
                && e.data["agentId"] == agent.as_str())
    );

    // Training again without a body re-indexes what the agent has; an
    // inactive agent ends INACTIVE, not ACTIVE.
    app.put(
        &format!("/api/v1/agents/{agent}"),
        &s,
        json!({ "isActive": false }),
    )
    .await;
    let res = app
        .http
        .post(app.url(&format!("/api/v1/agents/{agent}/train")))
        .bearer_auth(&s.token)
        .header("X-Tenant-ID", &s.tenant_id)
        .send()
        .await
        .expect("sent");
    let r = TestApp::reply(res).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job_id = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let job = app
        .eventually(Duration::from_secs(60), || async {
            let r = app.get(&format!("/api/v1/jobs/{job_id}"), &s).await;
            (r.body["status"] == "SUCCEEDED").then_some(r.body)
        })
        .await
        .expect("second training finished");
    assert_eq!(job["result"]["documents"], 2);
    let r = app.get(&format!("/api/v1/agents/{agent}"), &s).await;
    assert_eq!(r.body["status"], "INACTIVE");
    app.cleanup().await;
}
