//! AI providers: CRUD with masked keys, per-type validation, one default,
//! tenant isolation, the provider test job against the fake OpenAI server,
//! and the LLM client's classification of provider failures.

use std::time::Duration;

use aigentable_platform::crypto::SecretBox;
use aigentable_platform::egress::{Egress, EgressPolicy};
use aigentable_platform::ids::TenantId;
use aigentable_platform::llm::{self, ChatMessage, ChatRequest, LlmClient, LlmError};
use aigentable_platform::model::{AiProvider, AiProviderType};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn compatible(fake: &FakeOpenAi, name: &str) -> Value {
    json!({
        "name": name,
        "type": "OPENAI_COMPATIBLE",
        "baseUrl": fake.base_url(),
        "apiKey": "sk-test-abcd1234",
        "chatModel": "llama3.1",
    })
}

#[tokio::test]
async fn providers_crud_masking_validation_and_default() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;

    // Per-type validation, each naming its field.
    for (body, field) in [
        (json!({ "type": "OPENAI", "chatModel": "gpt-4o" }), "name"),
        (json!({ "name": "x", "chatModel": "gpt-4o" }), "type"),
        (
            json!({ "name": "x", "type": "OPENAI", "chatModel": "gpt-4o" }),
            "apiKey",
        ),
        (
            json!({ "name": "x", "type": "OPENAI_COMPATIBLE", "chatModel": "m" }),
            "baseUrl",
        ),
        (
            json!({ "name": "x", "type": "AZURE_OPENAI", "baseUrl": "https://r.openai.azure.com", "apiKey": "k", "chatModel": "gpt4o-deploy" }),
            "apiVersion",
        ),
        (
            json!({ "name": "x", "type": "AZURE_OPENAI", "apiVersion": "2024-10-21", "apiKey": "k", "chatModel": "d" }),
            "baseUrl",
        ),
        (
            json!({ "name": "x", "type": "OPENAI_COMPATIBLE", "baseUrl": "ftp://nope", "chatModel": "m" }),
            "baseUrl",
        ),
        (
            json!({ "name": "x", "type": "OPENAI", "apiKey": "k" }),
            "chatModel",
        ),
        (
            json!({ "name": "x", "type": "OPENAI", "apiKey": "k", "chatModel": "m", "embeddingDimensions": 0 }),
            "embeddingDimensions",
        ),
    ] {
        let r = app.post("/api/v1/ai-providers", &s, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], field, "{body}: {:?}", r.body);
    }
    let r = app
        .post(
            "/api/v1/ai-providers",
            &s,
            json!({ "name": "x", "type": "ANTHROPIC", "chatModel": "m" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "type", "{:?}", r.body);

    // The first provider becomes the default; the key never comes back.
    let r = app
        .post("/api/v1/ai-providers", &s, compatible(&fake, "Local"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let first = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(r.body["isDefault"], true);
    assert_eq!(r.body["hasApiKey"], true);
    assert_eq!(r.body["apiKeyLast4"], "1234");
    assert_eq!(r.body["apiKeyMasked"], "****1234");
    assert_eq!(r.body["type"], "OPENAI_COMPATIBLE");
    assert!(!r.body.to_string().contains("sk-test"), "{:?}", r.body);
    // Sealed at rest.
    let stored = app
        .platform
        .db
        .scoped::<AiProvider>(&TenantId::from_trusted(s.tenant_id.clone()))
        .find_by_id(&first)
        .await
        .ok()
        .flatten()
        .expect("stored provider");
    let sealed = stored.api_key.clone().unwrap_or_default();
    assert!(sealed.starts_with("v1:") && !sealed.contains("abcd1234"));
    assert_eq!(
        app.platform.secrets.open(&sealed).ok().as_deref(),
        Some("sk-test-abcd1234")
    );

    // A second one, made the default: the first is no longer.
    let r = app
        .post(
            "/api/v1/ai-providers",
            &s,
            json!({
                "name": "Azure", "type": "AZURE_OPENAI", "baseUrl": "https://acme.openai.azure.com/",
                "apiVersion": "2024-10-21", "apiKey": "azure-key-9876", "chatModel": "gpt4o-prod",
                "isDefault": true,
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let azure = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(r.body["isDefault"], true);
    assert_eq!(r.body["baseUrl"], "https://acme.openai.azure.com");
    let r = app.get("/api/v1/ai-providers", &s).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["pagination"]["total"], 2);
    let defaults: Vec<&Value> = r.body["providers"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["isDefault"] == true).collect())
        .unwrap_or_default();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["id"], azure.as_str());

    // Switching back through PUT; unsetting the default directly is refused.
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{first}"),
            &s,
            json!({ "isDefault": true, "name": "Local LLM" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["isDefault"], true);
    assert_eq!(r.body["name"], "Local LLM");
    assert_eq!(r.body["apiKeyLast4"], "1234", "untouched key stays");
    let r = app.get(&format!("/api/v1/ai-providers/{azure}"), &s).await;
    assert_eq!(r.body["isDefault"], false);
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{first}"),
            &s,
            json!({ "isDefault": false }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "isDefault");
    // An update is validated as a whole: Azure without its version.
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{azure}"),
            &s,
            json!({ "apiVersion": null }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "apiVersion");
    // Removing the key of a compatible provider is allowed (Ollama has none).
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{first}"),
            &s,
            json!({ "apiKey": null }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["hasApiKey"], false);
    assert_eq!(r.body["apiKeyLast4"], Value::Null);

    // Agents may name a provider; deleting it makes them use the default,
    // and deleting the default promotes the remaining provider.
    let r = app
        .post(
            "/api/v1/agents",
            &s,
            json!({ "name": "Support", "aiProviderId": azure }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .delete(&format!("/api/v1/ai-providers/{azure}"), &s)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = app.get(&format!("/api/v1/agents/{agent}"), &s).await;
    assert_eq!(r.body["aiProviderId"], Value::Null);
    let r = app
        .post("/api/v1/ai-providers", &s, compatible(&fake, "Spare"))
        .await;
    let spare = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(r.body["isDefault"], false);
    let r = app
        .delete(&format!("/api/v1/ai-providers/{first}"), &s)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("/api/v1/ai-providers/{spare}"), &s).await;
    assert_eq!(r.body["isDefault"], true, "{:?}", r.body);

    // AI providers are administrators' (keys, base URLs); other tenants see nothing.
    let user = app.add_user(&s, "TENANT_USER").await;
    let r = app.get("/api/v1/ai-providers", &user).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post("/api/v1/ai-providers", &user, compatible(&fake, "Nope"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .put(
            &format!("/api/v1/ai-providers/{spare}"),
            &user,
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let other = app.register("Globex").await;
    for r in [
        app.get(&format!("/api/v1/ai-providers/{spare}"), &other)
            .await,
        app.put(
            &format!("/api/v1/ai-providers/{spare}"),
            &other,
            json!({ "name": "mine" }),
        )
        .await,
        app.delete(&format!("/api/v1/ai-providers/{spare}"), &other)
            .await,
        app.post(
            &format!("/api/v1/ai-providers/{spare}/test"),
            &other,
            json!({}),
        )
        .await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    }
    let r = app.get("/api/v1/ai-providers", &other).await;
    assert_eq!(r.body["pagination"]["total"], 0);
    let r = app.get("/api/v1/openapi.json", &s).await;
    assert!(r.body["paths"]["/api/v1/ai-providers/{id}/test"].is_object());
    app.cleanup().await;
}

#[tokio::test]
async fn provider_test_job_reports_ok_and_failure() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let r = app
        .post("/api/v1/ai-providers", &s, compatible(&fake, "Local"))
        .await;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();

    let r = app
        .post(&format!("/api/v1/ai-providers/{id}/test"), &s, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job = app
        .job_finished(&s, r.body["jobId"].as_str().unwrap_or_default())
        .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job:?}");
    assert_eq!(job["type"], "test_ai_provider");
    assert_eq!(job["result"]["ok"], true, "{job:?}");
    assert!(job["result"]["latencyMs"].is_u64());
    let sent = fake.chat_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer sk-test-abcd1234")
    );
    assert_eq!(sent[0].body["model"], "llama3.1");
    assert_eq!(sent[0].body["max_tokens"], 1);
    // Its tokens are counted for the tenant.
    let r = app
        .get(&format!("/api/v1/tenants/{}/usage", s.tenant_id), &s)
        .await;
    assert!(
        r.body["llmTokens"].as_u64().is_some_and(|t| t > 0),
        "{:?}",
        r.body
    );

    // A wrong key: the job ran, the provider said no, the result says why.
    fake.fail_always(401);
    let r = app
        .post(&format!("/api/v1/ai-providers/{id}/test"), &s, json!({}))
        .await;
    let job = app
        .job_finished(&s, r.body["jobId"].as_str().unwrap_or_default())
        .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job:?}");
    assert_eq!(job["result"]["ok"], false);
    assert_eq!(job["result"]["retryable"], false);
    let error = job["result"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("Incorrect API key"),
        "{error}"
    );
    app.cleanup().await;
}

fn provider(kind: AiProviderType, base: String, secrets: &SecretBox) -> AiProvider {
    AiProvider {
        id: "p1".to_owned(),
        tenant_id: TenantId::new(),
        name: "fake".to_owned(),
        provider_type: kind,
        base_url: Some(base),
        api_version: Some("2024-10-21".to_owned()),
        api_key: Some(secrets.seal("sk-live-5678")),
        api_key_last4: Some("5678".to_owned()),
        chat_model: "chat-deploy".to_owned(),
        embedding_model: Some("embed-deploy".to_owned()),
        embedding_dimensions: None,
        is_default: true,
        is_active: true,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

fn hello() -> ChatRequest {
    ChatRequest {
        model: String::new(),
        temperature: 0.2,
        max_tokens: 50,
        messages: vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hello there"),
        ],
    }
}

#[tokio::test]
async fn llm_client_speaks_openai_and_azure_and_classifies_failures() {
    let fake = FakeOpenAi::start().await;
    let secrets = SecretBox::new(&[9u8; 32]);
    let timeout = Duration::from_secs(5);
    // The fake listens on 127.0.0.1.
    let egress = Egress::new(EgressPolicy {
        allow_private_networks: true,
    })
    .expect("egress");

    // OpenAI: bearer key, max_completion_tokens, echo answer and usage.
    let openai = provider(AiProviderType::Openai, fake.base_url(), &secrets);
    let client = LlmClient::from_provider(&openai, &secrets, &egress, timeout).expect("client");
    let out = client.chat(&hello()).await.expect("chat");
    assert_eq!(out.content, "echo: hello there");
    assert_eq!(out.model, "chat-deploy");
    // The fake counts words: 4 in the prompt, 3 in "echo: hello there".
    assert_eq!(out.usage.total_tokens, 7);
    let sent = fake.chat_requests();
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-live-5678"));
    assert_eq!(sent[0].body["max_completion_tokens"], 50);
    assert_eq!(sent[0].body["messages"][0]["role"], "system");
    fake.push_reply("scripted answer");
    assert_eq!(
        client
            .chat(&hello())
            .await
            .map(|o| o.content)
            .ok()
            .as_deref(),
        Some("scripted answer")
    );
    let vectors = client
        .embed(&["one".to_owned(), "two words".to_owned()])
        .await
        .expect("embed");
    assert_eq!(vectors.len(), 2);
    assert_eq!(
        vectors[0].len(),
        aigentable_tests::fake_openai::DEFAULT_DIMS
    );

    // Azure: deployment in the path, api-version query, api-key header.
    fake.clear_requests();
    let azure = provider(AiProviderType::AzureOpenai, fake.url(), &secrets);
    let client =
        LlmClient::from_provider(&azure, &secrets, &egress, timeout).expect("azure client");
    client.chat(&hello()).await.expect("azure chat");
    client.embed(&["x".to_owned()]).await.expect("azure embed");
    let sent = fake.requests();
    assert_eq!(
        sent[0].path,
        "/openai/deployments/chat-deploy/chat/completions"
    );
    assert_eq!(sent[0].query("api-version"), Some("2024-10-21"));
    assert_eq!(sent[0].header("api-key"), Some("sk-live-5678"));
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(sent[1].path, "/openai/deployments/embed-deploy/embeddings");

    // Failures: exactly one HTTP call each, classified.
    let client = LlmClient::from_provider(&openai, &secrets, &egress, timeout).expect("client");
    fake.clear_requests();
    fake.rate_limit_next(1, 7);
    let err = client.chat(&hello()).await.err();
    assert_eq!(
        err,
        Some(LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    assert_eq!(fake.requests().len(), 1, "no retry inside the client");
    fake.server_error_next(1);
    let err = client.chat(&hello()).await.err();
    assert!(
        matches!(&err, Some(LlmError::Server(m)) if m.contains("500")),
        "{err:?}"
    );
    fake.fail_next("", 1, 404, None);
    let err = client.chat(&hello()).await.err();
    assert!(
        matches!(&err, Some(e @ LlmError::Rejected(_)) if !e.is_retryable()),
        "{err:?}"
    );
    let slow = LlmClient::from_provider(&openai, &secrets, &egress, Duration::from_millis(300))
        .expect("client");
    fake.set_delay(Duration::from_secs(2));
    assert_eq!(slow.chat(&hello()).await.err(), Some(LlmError::Timeout));
    fake.set_delay(Duration::ZERO);
    let nowhere = provider(
        AiProviderType::OpenaiCompatible,
        "http://127.0.0.1:9/v1".to_owned(),
        &secrets,
    );
    let err = LlmClient::from_provider(&nowhere, &secrets, &egress, timeout)
        .expect("client")
        .chat(&hello())
        .await
        .err();
    assert!(matches!(err, Some(LlmError::Network(_))), "{err:?}");
    // A key sealed with another DATA_ENCRYPTION_KEY is a configuration error.
    let other = SecretBox::new(&[1u8; 32]);
    assert!(matches!(
        LlmClient::from_provider(&openai, &other, &egress, timeout),
        Err(LlmError::Config(_))
    ));
}

#[tokio::test]
async fn resolve_provider_prefers_the_agents_own_then_the_default() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let tenant = TenantId::from_trusted(s.tenant_id.clone());
    let db = &app.platform.db;
    assert!(
        llm::resolve_provider(db, &tenant, None)
            .await
            .ok()
            .flatten()
            .is_none()
    );
    let r = app
        .post("/api/v1/ai-providers", &s, compatible(&fake, "Default"))
        .await;
    let default = r.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .post("/api/v1/ai-providers", &s, compatible(&fake, "Special"))
        .await;
    let special = r.body["id"].as_str().unwrap_or_default().to_owned();
    let id = |p: Option<AiProvider>| p.map(|p| p.id);
    assert_eq!(
        id(llm::resolve_provider(db, &tenant, Some(&special))
            .await
            .ok()
            .flatten()),
        Some(special.clone())
    );
    assert_eq!(
        id(llm::resolve_provider(db, &tenant, None)
            .await
            .ok()
            .flatten()),
        Some(default.clone())
    );
    // An inactive or unknown agent provider falls back to the default.
    app.put(
        &format!("/api/v1/ai-providers/{special}"),
        &s,
        json!({ "isActive": false }),
    )
    .await;
    assert_eq!(
        id(llm::resolve_provider(db, &tenant, Some(&special))
            .await
            .ok()
            .flatten()),
        Some(default.clone())
    );
    // Another tenant's provider is never used.
    let other = TenantId::new();
    assert!(
        llm::resolve_provider(db, &other, Some(&default))
            .await
            .ok()
            .flatten()
            .is_none()
    );
    app.cleanup().await;
}
