//! Dense embeddings: ingestion embeds chunks in batches through the
//! tenant's default provider (the fake OpenAI server), retries 429s,
//! indexes into the model's collection, and search fuses dense and BM25 so
//! that a passage found only by meaning comes back; without a provider
//! BM25 alone keeps working.

use std::time::Duration;

use aigentable_platform::ids::TenantId;
use aigentable_platform::llm::embedding::TenantSlot;
use aigentable_platform::llm::index;
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::{Session, TestApp, spawn_app_with};
use bson::doc;
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upload(app: &TestApp, s: &Session, name: &str, text: &str) -> String {
    app.upload_text(s, name, text, None).await
}

async fn wait_ready(app: &TestApp, s: &Session, id: &str) -> Value {
    app.wait_document_ready(s, id).await
}

async fn search(app: &TestApp, s: &Session, q: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/search/documents?q={q}&limit=5"), s)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["results"].as_array().cloned().unwrap_or_default()
}

fn provider(fake: &FakeOpenAi, embedding_model: &str) -> Value {
    json!({
        "name": "Local",
        "type": "OPENAI_COMPATIBLE",
        "baseUrl": fake.base_url(),
        "apiKey": "sk-embed-0001",
        "chatModel": "chat-model",
        "embeddingModel": embedding_model,
    })
}

/// Tokens the tenant spent on embeddings, from `token_usage`.
async fn embedding_tokens(app: &TestApp, s: &Session) -> i64 {
    let docs: Vec<bson::Document> = app
        .platform
        .db
        .unscoped::<bson::Document>("token_usage")
        .find(doc! { "tenantId": &s.tenant_id, "purpose": "embedding" })
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("usage");
    docs.iter()
        .map(|d| d.get_i64("totalTokens").unwrap_or(0))
        .sum()
}

const REFUNDS: &str =
    "Refunds are issued within 14 days of purchase. Contact the help desk to get your money back.";
const SHIPPING: &str =
    "Parcels ship from Rotterdam every weekday. Delivery takes three working days.";

#[tokio::test]
async fn search_moves_to_dense_vectors_when_a_provider_embeds() {
    let fake = FakeOpenAi::start().await;
    let app = spawn_app_with(&[]).await;
    let s = app.register("Acme").await;

    // No provider: BM25 alone, no call to any provider.
    let refunds = upload(&app, &s, "refunds.txt", REFUNDS).await;
    let shipping = upload(&app, &s, "shipping.txt", SHIPPING).await;
    wait_ready(&app, &s, &refunds).await;
    wait_ready(&app, &s, &shipping).await;
    let hits = search(&app, &s, "rotterdam").await;
    assert_eq!(hits[0]["documentId"], shipping.as_str());
    // "refundable" shares no word with the passage: BM25 finds nothing.
    assert!(search(&app, &s, "refundable").await.is_empty());
    assert!(fake.requests().is_empty());

    // A provider with an embedding model: every document is re-indexed
    // into that model's collection and search switches over.
    let r = app
        .post("/api/v1/ai-providers", &s, provider(&fake, "embed-a"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let tenant = TenantId::from_trusted(s.tenant_id.clone());
    let switched = app
        .eventually(Duration::from_secs(60), || async {
            index::load(&app.platform.db, &tenant)
                .await
                .ok()
                .flatten()
                .filter(|i| i.target.is_none() && i.active.model.as_deref() == Some("embed-a"))
        })
        .await
        .expect("search switched to the embedding collection");
    assert_eq!(switched.active.collection, "chunks_embed_a_64");
    assert_eq!(switched.active.dims, Some(64));
    let sent = fake.embedding_requests();
    assert!(sent.len() >= 2, "one call per document");
    for r in &sent {
        assert_eq!(r.body["model"], "embed-a");
        assert_eq!(r.header("authorization"), Some("Bearer sk-embed-0001"));
    }

    // Found by meaning only: the dense half of the fusion.
    fake.clear_requests();
    let hits = search(&app, &s, "refundable").await;
    assert!(!hits.is_empty(), "dense search finds the passage");
    assert_eq!(hits[0]["documentId"], refunds.as_str(), "{hits:?}");
    let query_calls = fake.embedding_requests();
    assert_eq!(query_calls.len(), 1);
    assert_eq!(query_calls[0].inputs(), vec!["refundable".to_owned()]);
    // Words still rank by BM25 too.
    assert_eq!(
        search(&app, &s, "rotterdam").await[0]["documentId"],
        shipping.as_str()
    );
    assert!(embedding_tokens(&app, &s).await > 0);

    // Another model (and size): re-indexed again, search follows.
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    fake.clear_requests();
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{id}"),
            &s,
            json!({ "embeddingModel": "embed-b", "embeddingDimensions": 128 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let switched = app
        .eventually(Duration::from_secs(60), || async {
            index::load(&app.platform.db, &tenant)
                .await
                .ok()
                .flatten()
                .filter(|i| i.target.is_none() && i.active.model.as_deref() == Some("embed-b"))
        })
        .await
        .expect("search switched to the new model");
    assert_eq!(switched.active.collection, "chunks_embed_b_128");
    assert!(
        fake.embedding_requests()
            .iter()
            .all(|r| r.body["model"] == "embed-b" && r.body["dimensions"] == 128)
    );
    assert_eq!(
        search(&app, &s, "refundable").await[0]["documentId"],
        refunds.as_str()
    );

    // Removing the embedding model: back to BM25, still searchable.
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{id}"),
            &s,
            json!({ "embeddingModel": null, "embeddingDimensions": null }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.eventually(Duration::from_secs(60), || async {
        index::load(&app.platform.db, &tenant)
            .await
            .ok()
            .flatten()
            .filter(|i| i.target.is_none() && i.active.model.is_none())
    })
    .await
    .expect("search switched back to BM25");
    assert_eq!(
        search(&app, &s, "rotterdam").await[0]["documentId"],
        shipping.as_str()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn ingestion_embeds_in_batches_and_retries_rate_limits() {
    let fake = FakeOpenAi::start().await;
    let app = spawn_app_with(&[("EMBEDDING_BATCH_SIZE", "4")]).await;
    let s = app.register("Acme").await;
    let r = app
        .post("/api/v1/ai-providers", &s, provider(&fake, "embed-small"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Long enough for several chunks.
    let text: String = (0..14)
        .map(|i| {
            format!(
                "Section {i}. {}\n\n",
                format!("Policy clause number {i} explains the rules for topic {i} in detail. ")
                    .repeat(12)
            )
        })
        .collect();
    // The provider throttles twice first (Retry-After: 1 s).
    fake.rate_limit_next(2, 1);
    let started = std::time::Instant::now();
    let id = upload(&app, &s, "manual.txt", &text).await;
    let ready = wait_ready(&app, &s, &id).await;
    let chunks = ready["chunkCount"].as_u64().unwrap_or_default();
    assert!(chunks > 8, "several batches: {chunks} chunks");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "each Retry-After was waited for"
    );

    let calls = fake.embedding_requests();
    // Two throttled calls, then the batches.
    let sizes: Vec<usize> = calls.iter().map(|r| r.inputs().len()).collect();
    assert_eq!(sizes[0], 4);
    assert_eq!(sizes[1], 4);
    let batches = &sizes[2..];
    assert_eq!(batches.iter().sum::<usize>() as u64, chunks, "{sizes:?}");
    assert!(
        batches[..batches.len() - 1].iter().all(|n| *n == 4),
        "{sizes:?}"
    );
    assert!(batches.last().is_some_and(|n| (1..=4).contains(n)));
    assert!(calls.iter().all(|r| r.body["model"] == "embed-small"));
    // The retried batch is the same texts as the throttled one.
    assert_eq!(calls[0].inputs(), calls[2].inputs());
    assert!(embedding_tokens(&app, &s).await > 0);

    let hits = search(&app, &s, "clause%20number%207").await;
    assert!(!hits.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn a_provider_that_refuses_fails_the_document_with_the_reason() {
    let fake = FakeOpenAi::start().await;
    let app = spawn_app_with(&[]).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Acme").await;
    app.post("/api/v1/ai-providers", &s, provider(&fake, "embed-a"))
        .await;
    fake.fail_always(401);
    let id = upload(&app, &s, "refunds.txt", REFUNDS).await;
    let failed = app
        .eventually(Duration::from_secs(30), || async {
            let r = app.get(&format!("/api/v1/documents/{id}"), &s).await;
            (r.body["status"] == "FAILED").then_some(r.body)
        })
        .await
        .expect("document failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("embedding failed") && error.contains("401"),
        "{error}"
    );
    // Refused once: a 401 is not retried.
    assert_eq!(fake.embedding_requests().len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn embedding_slots_are_limited_per_tenant() {
    let app = spawn_app_with(&[]).await;
    let kv = &app.platform.kv;
    let busy = TenantId::new();
    let other = TenantId::new();
    let first = TenantSlot::acquire(kv, &busy, 1).await.expect("first slot");
    // The same tenant waits for the slot; another tenant does not.
    let waiting = tokio::spawn({
        let kv = kv.clone();
        let busy = busy.clone();
        async move {
            let started = std::time::Instant::now();
            let slot = TenantSlot::acquire(&kv, &busy, 1)
                .await
                .expect("second slot");
            let waited = started.elapsed();
            slot.release().await;
            waited
        }
    });
    let started = std::time::Instant::now();
    TenantSlot::acquire(kv, &other, 1)
        .await
        .expect("other tenant")
        .release()
        .await;
    assert!(started.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.release().await;
    let waited = waiting.await.expect("joined");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    app.cleanup().await;
}
