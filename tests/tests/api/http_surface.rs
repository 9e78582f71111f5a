//! Health, OpenAPI, metrics, CORS and JSON errors for unknown routes.

use aigentable_tests::spawn_app;
use reqwest::StatusCode;

#[tokio::test]
async fn health_docs_metrics_and_errors() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = aigentable_tests::TestApp::reply(
        app.http.get(app.url("/readyz")).send().await.expect("sent"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["mongodb"]["status"], "ok");
    assert_eq!(r.body["redis"]["status"], "ok");

    let spec = aigentable_tests::TestApp::reply(
        app.http
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(spec.status, StatusCode::OK);
    for path in [
        "/api/v1/auth/login",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/tenants/{id}/billing",
    ] {
        assert!(
            spec.body["paths"].get(path).is_some(),
            "openapi documents {path}"
        );
    }
    let docs = app
        .http
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .expect("sent");
    assert!(docs.status().is_success() || docs.status().is_redirection());

    let missing = aigentable_tests::TestApp::reply(
        app.http
            .get(app.url("/api/v1/nope"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.message().is_empty(), "{:?}", missing.body);

    let admin = app.register("Acme").await;
    // Platform health is for platform administrators only.
    let health = app.get("/api/v1/system/health", &admin).await;
    assert_eq!(health.status, StatusCode::FORBIDDEN, "{:?}", health.body);
    aigentable_platform::bootstrap::create_super_admin(
        &app.platform,
        "root@aigentable.io",
        "rootPassword1",
    )
    .await
    .expect("super admin");
    let login = app.login("root@aigentable.io", "rootPassword1").await;
    let root = aigentable_tests::Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        ..admin.clone()
    };
    let health = app.get("/api/v1/system/health", &root).await;
    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
    assert_eq!(health.body["status"], "healthy");

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("aigentable_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/v1/auth/register\""));

    // CORS preflight from the dev frontend.
    let pre = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization,x-tenant-id",
        )
        .send()
        .await
        .expect("sent");
    assert!(pre.status().is_success(), "preflight {}", pre.status());
    assert_eq!(
        pre.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://localhost:5173")
    );
    app.cleanup().await;
}
