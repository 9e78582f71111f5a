//! Agents as the seed's `useAgents` hook and AgentBuilder page use them.

use aigentable_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn agents_round_trip_with_the_seed_shapes() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    // The guide's POST body, verbatim.
    let r = app
        .post(
            "/api/v1/agents",
            &s,
            json!({
                "name": "Customer Support Agent",
                "description": "Handles customer inquiries",
                "personality": "friendly and helpful",
                "instructions": "Always be polite and provide accurate information",
                "model": "gpt-4",
                "temperature": 0.7,
                "maxTokens": 1000,
                "category": "CUSTOMER_SERVICE",
                "isActive": true
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = r.body.clone();
    let id = agent["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 24);
    assert_eq!(agent["name"], "Customer Support Agent");
    assert_eq!(agent["temperature"], 0.7);
    assert_eq!(agent["maxTokens"], 1000);
    assert_eq!(agent["isActive"], true);
    assert_eq!(agent["status"], "ACTIVE");
    assert_eq!(agent["retrieval"]["topK"], 5);
    assert!(
        agent["welcomeMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(
        agent["fallbackMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // The AgentBuilder's update: only the form fields.
    let r = app
        .put(
            &format!("/api/v1/agents/{id}"),
            &s,
            json!({ "name": "Support", "description": "d", "personality": "p", "instructions": "i", "model": "gpt-3.5-turbo", "temperature": 0.2 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["model"], "gpt-3.5-turbo");
    assert_eq!(r.body["temperature"], 0.2);
    assert_eq!(r.body["maxTokens"], 1000, "fields not sent are kept");

    let r = app
        .put(
            &format!("/api/v1/agents/{id}"),
            &s,
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(r.body["status"], "INACTIVE");

    let list = app.get("/api/v1/agents", &s).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["agents"][0]["id"], id.as_str());
    assert_eq!(list.body["pagination"]["total"], 1);
    assert_eq!(
        app.get("/api/v1/agents?status=ACTIVE", &s).await.body["pagination"]["total"],
        0
    );
    assert_eq!(
        app.get("/api/v1/agents?status=INACTIVE", &s).await.body["pagination"]["total"],
        1
    );
    assert_eq!(
        app.get("/api/v1/agents?search=supp", &s).await.body["pagination"]["total"],
        1
    );
    assert_eq!(
        app.get("/api/v1/agents?category=SALES", &s).await.body["pagination"]["total"],
        0
    );
    let found = app.get("/api/v1/search/agents?q=SUPPORT", &s).await;
    assert_eq!(
        found.body["agents"][0]["id"],
        id.as_str(),
        "{:?}",
        found.body
    );
    assert_eq!(
        app.get("/api/v1/search/agents", &s).await.status,
        StatusCode::BAD_REQUEST
    );

    let r = app.delete(&format!("/api/v1/agents/{id}"), &s).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/agents/{id}"), &s).await.status,
        StatusCode::NOT_FOUND
    );
    app.cleanup().await;
}

#[tokio::test]
async fn agent_input_is_validated_and_scoped() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let other = app.register("Other").await;
    for (body, field) in [
        (json!({ "description": "no name" }), "name"),
        (json!({ "name": "A", "temperature": 2.5 }), "temperature"),
        (json!({ "name": "A", "temperature": "hot" }), "temperature"),
        (json!({ "name": "A", "maxTokens": 0 }), "maxTokens"),
        (json!({ "name": "A", "maxTokens": -5 }), "maxTokens"),
        (
            json!({ "name": "A", "retrieval": { "topK": 99 } }),
            "retrieval.topK",
        ),
        (
            json!({ "name": "A", "aiProviderId": "65a1b2c3d4e5f6a7b8c9d0e1" }),
            "aiProviderId",
        ),
        (json!({ "name": "x".repeat(101) }), "name"),
    ] {
        let r = app.post("/api/v1/agents", &s, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], field, "{body}: {:?}", r.body);
    }
    let r = app
        .post("/api/v1/agents", &s, json!({ "name": "Mine" }))
        .await;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    // Other tenants cannot see, change or delete it.
    assert_eq!(
        app.get(&format!("/api/v1/agents/{id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put(
            &format!("/api/v1/agents/{id}"),
            &other,
            json!({ "name": "Theirs" })
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/agents/{id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/agents", &other).await.body["pagination"]["total"],
        0
    );
    // A failed update changes nothing.
    let r = app
        .put(
            &format!("/api/v1/agents/{id}"),
            &s,
            json!({ "name": "Renamed", "temperature": 9 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get(&format!("/api/v1/agents/{id}"), &s).await.body["name"],
        "Mine"
    );
    // Members may use agents but only admins delete them.
    let member = app.add_user(&s, "TENANT_USER").await;
    assert_eq!(
        app.delete(&format!("/api/v1/agents/{id}"), &member)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    app.cleanup().await;
}
