//! Request rate limits: one GCRA per key, user, tenant and expensive route,
//! in Redis, so two api replicas together never admit more than a limit;
//! every answer carries the `X-RateLimit-*` headers and a refusal is a 429
//! with `Retry-After`.

use aigentable_tests::{Reply, Session, TestApp, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;

fn header(r: &Reply, name: &str) -> Option<u64> {
    r.headers.get(name)?.to_str().ok()?.parse().ok()
}

async fn get_with_key(app: &TestApp, path: &str, key: &str) -> Reply {
    let res = app
        .http
        .get(app.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("sent");
    TestApp::reply(res).await
}

#[tokio::test]
async fn a_keys_limit_holds_across_two_replicas() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let admin = app.register("Hammer").await;
    let r = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({ "name": "script", "permissions": ["agents:read"], "rateLimit": 20 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = r.body["key"].as_str().unwrap_or_default().to_owned();

    // 30 concurrent requests on each replica: 60 against a limit of 20.
    let mut calls = Vec::new();
    for i in 0..60 {
        let target = if i % 2 == 0 { &app } else { &replica };
        calls.push(get_with_key(target, "/api/v1/agents", &key));
    }
    let replies = futures::future::join_all(calls).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let limited: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok, 20, "admitted across both replicas");
    assert_eq!(limited.len(), 40, "the rest are refused");
    for r in &replies {
        assert_eq!(header(r, "x-ratelimit-limit"), Some(20), "{:?}", r.headers);
        assert!(header(r, "x-ratelimit-remaining").is_some());
        assert!(header(r, "x-ratelimit-reset").is_some());
    }
    for r in limited {
        assert_eq!(r.body["code"], "RATE_LIMITED", "{:?}", r.body);
        assert_eq!(header(r, "x-ratelimit-remaining"), Some(0));
        // One request every 3600 / 20 = 180 seconds.
        let retry = header(r, "retry-after").unwrap_or_default();
        assert!((1..=180).contains(&retry), "Retry-After {retry}");
    }
    // The sessions of the tenant are not the key's budget.
    let r = app.get("/api/v1/agents", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    drop(replica);
    app.cleanup().await;
}

#[tokio::test]
async fn a_users_limit_counts_down_in_the_headers() {
    let app = spawn_app_with(&[("RATE_LIMIT_USER_PER_MINUTE", "5")]).await;
    let admin = app.register("Counted").await;
    for expected in (0..5).rev() {
        let r = app.get("/api/v1/agents", &admin).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(header(&r, "x-ratelimit-limit"), Some(5));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some(expected));
        let reset = header(&r, "x-ratelimit-reset").unwrap_or_default();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let r = app.get("/api/v1/agents", &admin).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    // One request every 12 seconds.
    let retry = header(&r, "retry-after").unwrap_or_default();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.body["details"]["retryAfter"], retry);
    // The budget is the user's, not the token's.
    let again = login_again(&app, &admin).await;
    let r = app.get("/api/v1/agents", &again).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the same user, a new token"
    );
    app.cleanup().await;
}

/// The same user through a second session: still one user's budget.
async fn login_again(app: &TestApp, s: &Session) -> Session {
    let login = app.login(&s.email, &s.password).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        ..s.clone()
    }
}

#[tokio::test]
async fn expensive_routes_have_their_own_stricter_limit() {
    let app = spawn_app_with(&[("RATE_LIMIT_EXPENSIVE_PER_MINUTE", "2")]).await;
    let admin = app.register("Searcher").await;
    for _ in 0..2 {
        let r = app.get("/api/v1/search/agents?q=refund", &admin).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = app.get("/api/v1/search/agents?q=refund", &admin).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert!(header(&r, "retry-after").is_some());
    // Cheap routes go on.
    let r = app.get("/api/v1/agents", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(header(&r, "x-ratelimit-remaining").unwrap_or_default() > 2);
    app.cleanup().await;
}

#[tokio::test]
async fn a_tenants_plan_limit_is_shared_by_its_users() {
    let app = spawn_app_with(&[("RATE_LIMIT_TENANT_PER_MINUTE", "free=6")]).await;
    let admin = app.register("Shared").await;
    // Creating the user is the tenant's first request.
    let user = app.add_user(&admin, "TENANT_USER").await;
    let mut ok = 0;
    for i in 0..10 {
        let who = if i % 2 == 0 { &admin } else { &user };
        let r = app.get("/api/v1/agents", who).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(header(&r, "x-ratelimit-limit"), Some(6), "{:?}", r.headers);
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(ok, 5, "6 per minute, one spent on creating the user");
    // Another tenant is untouched.
    let other = app.register("Elsewhere").await;
    let r = app.get("/api/v1/agents", &other).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.cleanup().await;
}
