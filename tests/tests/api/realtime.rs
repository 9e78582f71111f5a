//! The Socket.IO gateway as the seed frontend uses it.

use aigentable_tests::socket::connect;
use aigentable_tests::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn authenticated_sockets_receive_their_tenants_job_events() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;
    // The seed passes VITE_API_URL (ending in /api/v1) to io(): that is a namespace.
    let mut sock_a = connect(
        &app.base,
        "/api/v1",
        json!({ "token": a.token, "tenantId": a.tenant_id }),
    )
    .await
    .joined()
    .await;
    let mut sock_b = connect(
        &app.base,
        "/",
        json!({ "token": b.token, "tenantId": b.tenant_id }),
    )
    .await
    .joined()
    .await;
    // Give both namespace handshakes a moment to complete.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": a.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let event = sock_a
        .next_named("job-updated", 15)
        .await
        .expect("tenant A gets job-updated");
    assert_eq!(event["type"], "send_email");
    assert!(
        event["id"].as_str().is_some_and(|s| s.len() == 24),
        "{event}"
    );
    assert!(
        sock_b.next_named("job-updated", 2).await.is_none(),
        "tenant B never sees tenant A's events"
    );

    // join-conversation refuses ids the tenant does not own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    sock_a
        .client
        .emit_with_ack(
            "join-conversation",
            json!("65a1b2c3d4e5f6a7b8c9d0e1"),
            std::time::Duration::from_secs(5),
            move |payload: rust_socketio::Payload, _c| {
                let _ = tx.send(format!("{payload:?}"));
                futures::FutureExt::boxed(async {})
            },
        )
        .await
        .expect("emit");
    let ack = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
    assert!(
        ack.ok()
            .flatten()
            .is_some_and(|a| a.contains("conversation not found")),
        "join-conversation is refused for unknown conversations"
    );
    let _ = sock_a.client.disconnect().await;
    let _ = sock_b.client.disconnect().await;
    app.cleanup().await;
}

#[tokio::test]
async fn bad_revoked_or_foreign_credentials_are_refused() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;

    let mut garbage = connect(
        &app.base,
        "/",
        json!({ "token": "not.a.jwt", "tenantId": a.tenant_id }),
    )
    .await;
    let err = garbage
        .next_named("error", 5)
        .await
        .expect("a bad token gets a connect error");
    assert!(err.to_string().contains("invalid token"), "{err}");

    let mut foreign = connect(
        &app.base,
        "/api/v1",
        json!({ "token": a.token, "tenantId": b.tenant_id }),
    )
    .await;
    let err = foreign
        .next_named("error", 5)
        .await
        .expect("a tenant mismatch is refused");
    assert!(err.to_string().to_lowercase().contains("tenant"), "{err}");

    let r = app.post("/api/v1/auth/logout", &a, json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut revoked = connect(
        &app.base,
        "/",
        json!({ "token": a.token, "tenantId": a.tenant_id }),
    )
    .await;
    let err = revoked
        .next_named("error", 5)
        .await
        .expect("a logged-out token is refused");
    assert!(err.to_string().contains("logged out"), "{err}");

    let mut missing = connect(&app.base, "/", json!({})).await;
    assert!(
        missing.next_named("error", 5).await.is_some(),
        "no token, no connection"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn document_processing_is_announced_live() {
    let app = spawn_app().await;
    let s = app.register("Alpha").await;
    let mut sock = connect(
        &app.base,
        "/api/v1",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.upload_text(
        &s,
        "hours.txt",
        "Opening hours: nine to five on weekdays.",
        None,
    )
    .await;
    let mut seen = Vec::new();
    while let Some(event) = sock.next_named("document-updated", 15).await {
        let status = event["status"].as_str().unwrap_or_default().to_owned();
        assert_eq!(event["name"], "hours.txt");
        seen.push(status.clone());
        if status == "READY" || status == "FAILED" {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("QUEUED"), "{seen:?}");
    assert!(
        seen.contains(&"PARSING".to_owned()) && seen.contains(&"INDEXING".to_owned()),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("READY"), "{seen:?}");
    let _ = sock.client.disconnect().await;
    app.cleanup().await;
}
