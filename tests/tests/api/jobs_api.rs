//! The job records api: list, get, cancel, retry, tenant scoping.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aigentable_tests::fake_smtp::FakeSmtp;
use aigentable_tests::{TestApp, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn forgot(app: &TestApp, email: &str) {
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn wait_status(
    app: &TestApp,
    s: &aigentable_tests::Session,
    id: &str,
    status: &str,
) -> Value {
    app.eventually(Duration::from_secs(20), || async {
        let r = app.get(&format!("/api/v1/jobs/{id}"), s).await;
        (r.body["status"] == status).then_some(r.body)
    })
    .await
    .unwrap_or_else(|| panic!("job {id} never reached {status}"))
}

#[tokio::test]
async fn failed_jobs_are_listed_retried_and_scoped_to_their_tenant() {
    let smtp = FakeSmtp::start(true).await;
    let app = spawn_app_with(&[("SMTP_URL", &smtp.url())]).await;
    let admin = app.register("Acme").await;
    let other = app.register("Other").await;
    forgot(&app, &admin.email).await;

    let list = app
        .eventually(Duration::from_secs(20), || async {
            let r = app.get("/api/v1/jobs?status=FAILED", &admin).await;
            (r.body["pagination"]["total"] == 1).then_some(r.body)
        })
        .await
        .expect("the refused email shows up as a failed job");
    let job = &list["jobs"][0];
    assert_eq!(job["type"], "send_email");
    assert_eq!(job["queue"], "emails");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{job}"
    );
    assert!(
        job.get("payload").is_none(),
        "payloads (reset tokens!) are never shown"
    );
    let id = job["id"].as_str().unwrap_or_default().to_owned();

    // Another tenant cannot see, cancel or retry it.
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{id}"), &other).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/api/v1/jobs/{id}/retry"), &other, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/jobs", &other).await.body["pagination"]["total"],
        0
    );

    // Cancelling a finished job is a conflict; retrying it runs it again.
    let r = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    smtp.reject.store(false, Ordering::SeqCst);
    let r = app
        .post(&format!("/api/v1/jobs/{id}/retry"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["status"], "QUEUED");
    let done = wait_status(&app, &admin, &id, "SUCCEEDED").await;
    assert_eq!(done["progress"], 100);
    assert!(done["lastError"].is_null());
    assert_eq!(smtp.messages().len(), 1, "the retried email was sent once");
    let r = app
        .post(&format!("/api/v1/jobs/{id}/retry"), &admin, json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "succeeded jobs are not retried"
    );

    for bad in ["status=DONE", "page=0"] {
        let r = app.get(&format!("/api/v1/jobs?{bad}"), &admin).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        app.get("/api/v1/jobs/zzz", &admin).await.status,
        StatusCode::NOT_FOUND
    );
    app.cleanup().await;
}

#[tokio::test]
async fn members_see_only_their_own_jobs() {
    let app = spawn_app_with(&[]).await;
    let admin = app.register("Acme").await;
    let member = app.add_user(&admin, "TENANT_USER").await;
    forgot(&app, &admin.email).await;
    let all = app
        .eventually(Duration::from_secs(20), || async {
            let r = app.get("/api/v1/jobs", &admin).await;
            (r.body["pagination"]["total"] == 1).then_some(r.body)
        })
        .await;
    assert!(all.is_some(), "admins see the tenant's jobs");
    let mine = app.get("/api/v1/jobs", &member).await;
    assert_eq!(
        mine.body["pagination"]["total"], 0,
        "system jobs are not a member's"
    );
    app.cleanup().await;
}
