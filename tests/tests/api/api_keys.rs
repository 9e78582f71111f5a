//! API keys end to end: created with the guide's body, the secret shown
//! once and stored only as a keyed hash, scopes allowed and denied (403
//! naming the missing scope), the tenant taken from the key, expiry, and a
//! revocation seen by a second api replica at once.

use std::time::Duration;

use aigentable_tests::{Reply, Session, TestApp, spawn_app};
use bson::{Document, doc};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn create_key(app: &TestApp, admin: &Session, body: Value) -> Reply {
    app.post("/api/v1/api-keys", admin, body).await
}

/// A call with `X-API-Key` and nothing else.
async fn with_key(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestApp::reply(req.send().await.expect("sent")).await
}

#[tokio::test]
async fn a_key_is_shown_once_and_stored_only_as_a_keyed_hash() {
    let app = spawn_app().await;
    let admin = app.register("Keys").await;
    let expires = (Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    // The guide's body.
    let r = create_key(
        &app,
        &admin,
        json!({
            "name": "Mobile App Key",
            "permissions": ["conversations:read", "conversations:write", "messages:read"],
            "rateLimit": 1000,
            "expiresAt": expires,
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let secret = r.body["key"].as_str().unwrap_or_default().to_owned();
    assert!(
        secret.starts_with("ak_live_") && secret.len() > 40,
        "{secret}"
    );
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(r.body["name"], "Mobile App Key");
    assert_eq!(r.body["rateLimit"], 1000);
    assert_eq!(r.body["createdBy"], admin.user_id.as_str());
    assert_eq!(r.body["usageCount"], 0);
    assert!(secret.starts_with(r.body["prefix"].as_str().unwrap_or("?")));
    assert!(secret.ends_with(r.body["last4"].as_str().unwrap_or("?")));
    assert_eq!(
        r.body["permissions"],
        json!(["conversations:read", "conversations:write", "messages:read"])
    );

    // Listed without the secret.
    let list = app.get("/api/v1/api-keys", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["apiKeys"][0]["id"], id.as_str());
    assert!(
        list.body["apiKeys"][0].get("key").is_none(),
        "{:?}",
        list.body
    );
    assert!(!list.body.to_string().contains(&secret));
    assert!(list.body["apiKeys"][0]["expiresAt"].is_string());
    assert!(list.body["apiKeys"][0]["lastUsedAt"].is_null());

    // Stored: neither the secret nor its plain SHA-256.
    let stored = app
        .platform
        .db
        .unscoped::<Document>("api_keys")
        .find_one(doc! { "_id": &id })
        .await
        .expect("read")
        .expect("stored");
    let text = format!("{stored:?}");
    assert!(!text.contains(&secret), "{text}");
    assert!(!text.contains(&aigentable_platform::crypto::sha256_hex(&secret)));
    assert_eq!(stored.get_str("keyHash").map(str::len), Ok(64));

    // Used once: lastUsedAt and the count follow.
    let r = with_key(&app, Method::GET, "/api/v1/conversations", &secret, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let used = app
        .eventually(Duration::from_secs(5), || async {
            let l = app.get("/api/v1/api-keys", &admin).await;
            (l.body["apiKeys"][0]["usageCount"] == 1).then_some(l.body)
        })
        .await
        .expect("the use is recorded");
    assert!(used["apiKeys"][0]["lastUsedAt"].is_string(), "{used:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn bad_key_requests_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.register("Keys").await;
    let r = create_key(
        &app,
        &admin,
        json!({ "name": "x", "permissions": ["agents:read", "agents:fly", "root"] }),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "permissions");
    assert_eq!(r.body["details"]["unknown"], json!(["agents:fly", "root"]));
    assert!(r.message().contains("agents:fly") && r.message().contains("root"));
    for (body, field) in [
        (json!({ "name": "x", "permissions": [] }), "permissions"),
        (
            json!({ "name": " ", "permissions": ["agents:read"] }),
            "name",
        ),
        (
            json!({ "name": "x", "permissions": ["agents:read"], "rateLimit": 0 }),
            "rateLimit",
        ),
        (
            json!({ "name": "x", "permissions": ["agents:read"], "expiresAt": "2020-01-01T00:00:00Z" }),
            "expiresAt",
        ),
        (
            json!({ "name": "x", "permissions": ["agents:read"], "expiresAt": "tomorrow" }),
            "expiresAt",
        ),
        (json!({ "permissions": ["agents:read"] }), "name"),
    ] {
        let r = create_key(&app, &admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], field, "{body}: {:?}", r.body);
    }
    // Admins only.
    let user = app.add_user(&admin, "TENANT_USER").await;
    let r = create_key(
        &app,
        &user,
        json!({ "name": "x", "permissions": ["agents:read"] }),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = app.get("/api/v1/api-keys", &user).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    app.cleanup().await;
}

#[tokio::test]
async fn scopes_allow_and_deny_naming_the_missing_scope() {
    let app = spawn_app().await;
    let admin = app.register("Scopes").await;
    let other = app.register("Other").await;
    let r = create_key(
        &app,
        &admin,
        json!({ "name": "reader", "permissions": ["agents:read"] }),
    )
    .await;
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();

    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The same key as a bearer token.
    let r = app
        .http
        .get(app.url("/api/v1/agents"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);

    let r = with_key(
        &app,
        Method::POST,
        "/api/v1/agents",
        &key,
        Some(json!({ "name": "Sneaky" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.message().contains("agents:write"), "{:?}", r.body);
    let r = with_key(&app, Method::GET, "/api/v1/conversations", &key, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.message().contains("conversations:read"), "{:?}", r.body);
    // Never: users, keys, tenants, provider secrets, the platform.
    for path in [
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/ai-providers",
        &format!("/api/v1/tenants/{}", admin.tenant_id),
        "/api/v1/system/health",
        "/api/v1/auth/me",
    ] {
        let r = with_key(&app, Method::GET, path, &key, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {:?}", r.body);
        assert!(
            r.message().starts_with("API keys cannot"),
            "{path}: {:?}",
            r.body
        );
    }

    // The tenant is the key's: a disagreeing X-Tenant-ID is refused.
    let r = app
        .http
        .get(app.url("/api/v1/agents"))
        .header("X-API-Key", &key)
        .header("X-Tenant-ID", &other.tenant_id)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .http
        .get(app.url("/api/v1/agents"))
        .header("X-API-Key", &key)
        .header("X-Tenant-ID", &admin.tenant_id)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    // What it lists is its own tenant's.
    let mine = app
        .post("/api/v1/agents", &admin, json!({ "name": "Mine" }))
        .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{:?}", mine.body);
    let theirs = app
        .post("/api/v1/agents", &other, json!({ "name": "Theirs" }))
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{:?}", theirs.body);
    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    let text = r.body.to_string();
    assert!(text.contains("Mine") && !text.contains("Theirs"), "{text}");

    // Garbage and unknown keys.
    for bad in [
        "ak_live_nope",
        "ak_live_0123456789012345678901234567890123456789",
    ] {
        let r = with_key(&app, Method::GET, "/api/v1/agents", bad, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}: {:?}", r.body);
    }
    app.cleanup().await;
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = spawn_app().await;
    let admin = app.register("Expiry").await;
    let expires = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = create_key(
        &app,
        &admin,
        json!({ "name": "short", "permissions": ["agents:read"], "expiresAt": expires }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();
    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.message().contains("expired"), "{:?}", r.body);
    let list = app.get("/api/v1/api-keys", &admin).await;
    assert_eq!(
        list.body["apiKeys"][0]["status"], "EXPIRED",
        "{:?}",
        list.body
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_another_replica_at_once() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let admin = app.register("Revoke").await;
    let r = create_key(
        &app,
        &admin,
        json!({ "name": "app", "permissions": ["agents:read"] }),
    )
    .await;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();
    let r = with_key(&replica, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let r = app.delete(&format!("/api/v1/api-keys/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // The very next request, on the other replica.
    let r = with_key(&replica, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.message().contains("revoked"), "{:?}", r.body);

    let list = app.get("/api/v1/api-keys", &admin).await;
    assert_eq!(list.body["apiKeys"], json!([]), "{:?}", list.body);
    let r = app.delete(&format!("/api/v1/api-keys/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    drop(replica);
    app.cleanup().await;
}

#[tokio::test]
async fn a_key_acts_no_higher_than_its_creator() {
    let app = spawn_app().await;
    let owner = app.register("Creator").await;
    let second = app.add_user(&owner, "TENANT_ADMIN").await;
    let r = create_key(
        &app,
        &second,
        json!({ "name": "writer", "permissions": ["agents:read", "agents:write"] }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();
    let body = json!({ "name": "By key" });
    let r = with_key(
        &app,
        Method::POST,
        "/api/v1/agents",
        &key,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Demoted: the key keeps reading, stops writing what needs an admin.
    let r = app
        .put(
            &format!("/api/v1/users/{}", second.user_id),
            &owner,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = with_key(&app, Method::POST, "/api/v1/agents", &key, Some(body)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Deleted: the key stops.
    let r = app
        .delete(&format!("/api/v1/users/{}", second.user_id), &owner)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let r = with_key(&app, Method::GET, "/api/v1/agents", &key, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    app.cleanup().await;
}
