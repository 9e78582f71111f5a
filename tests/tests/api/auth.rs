//! Register, login, me, logout, password reset and brute-force limits,
//! with the shapes the seed frontend reads.

use std::time::Duration;

use aigentable_tests::{Session, spawn_app, spawn_app_with};
use bson::doc;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn register_returns_user_tenant_and_token_as_the_guide_shows() {
    let app = spawn_app().await;
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({
                "email": "John@Example.com", "password": "securePassword123",
                "firstName": "John", "lastName": "Doe", "tenantName": "My Company"
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let user = &r.body["user"];
    assert!(user["id"].as_str().is_some_and(|s| s.len() == 24));
    assert_eq!(user["email"], "john@example.com");
    assert_eq!(user["firstName"], "John");
    assert_eq!(user["lastName"], "Doe");
    assert_eq!(user["role"], "TENANT_ADMIN");
    assert_eq!(user["tenantId"], r.body["tenant"]["id"]);
    assert_eq!(r.body["tenant"]["name"], "My Company");
    assert!(user.get("passwordHash").is_none());
    let token = r.body["token"].as_str().unwrap_or_default();
    assert_eq!(token.split('.').count(), 3);

    // The same email again is a conflict, whatever its case.
    let again = app
        .request(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({ "email": "JOHN@example.com", "password": "securePassword123", "firstName": "J", "lastName": "D" })),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(!again.message().is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn register_rejects_bad_input_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({ "password": "securePassword123", "firstName": "A", "lastName": "B" }),
            "email",
        ),
        (
            json!({ "email": "nope", "password": "securePassword123", "firstName": "A", "lastName": "B" }),
            "email",
        ),
        (
            json!({ "email": "a@example.com", "password": "short", "firstName": "A", "lastName": "B" }),
            "password",
        ),
        (
            json!({ "email": "a@example.com", "password": "securePassword123", "firstName": "  ", "lastName": "B" }),
            "firstName",
        ),
        (
            json!({ "email": 42, "password": "securePassword123", "firstName": "A", "lastName": "B" }),
            "email",
        ),
        (
            json!({ "email": "a@example.com", "password": "securePassword123", "firstName": "A", "lastName": "B", "tenantName": "" }),
            "tenantName",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .request(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} -> {:?}", r.body);
        assert_eq!(r.body["details"]["field"], field, "{body} -> {:?}", r.body);
        assert!(r.message().contains(field), "{body} -> {:?}", r.body);
        assert_eq!(r.body["code"], "VALIDATION_ERROR");
    }

    // Malformed JSON, wrong content type, oversized body: all 4xx with a message.
    let url = app.url("/api/v1/auth/register");
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .expect("sent");
    let r = aigentable_tests::TestApp::reply(res).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("JSON"), "{:?}", r.body);
    let res = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"email\":\"{}\"}}", "a".repeat(200_000));
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("sent");
    let r = aigentable_tests::TestApp::reply(res).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    assert!(!r.message().is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn login_me_and_logout() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;

    let r = app.login(&s.email.to_uppercase(), &s.password).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"]["tenantId"], s.tenant_id.as_str());
    assert_eq!(r.body["user"]["email"], s.email.as_str());
    assert_eq!(r.body["user"]["role"], "TENANT_ADMIN");
    let session = Session {
        token: r.body["token"].as_str().unwrap_or_default().to_owned(),
        ..s.clone()
    };

    let wrong = app.login(&s.email, "wrongPassword1").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.message(), "Invalid email or password");
    let unknown = app.login("nobody@example.com", "wrongPassword1").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.message(),
        wrong.message(),
        "unknown emails look the same"
    );

    let me = app.get("/api/v1/auth/me", &session).await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["user"]["id"], s.user_id.as_str());
    assert_eq!(me.body["tenant"]["name"], "Acme");

    // No token, a garbage token, a token for another audience: 401.
    let r = app
        .request(Method::GET, "/api/v1/auth/me", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.message().is_empty());
    let garbage = Session {
        token: "abc.def.ghi".into(),
        ..s.clone()
    };
    assert_eq!(
        app.get("/api/v1/auth/me", &garbage).await.status,
        StatusCode::UNAUTHORIZED
    );

    let out = app.post("/api/v1/auth/logout", &session, json!({})).await;
    assert_eq!(out.status, StatusCode::OK, "{:?}", out.body);
    let after = app.get("/api/v1/auth/me", &session).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "a logged-out token is rejected"
    );
    // The other session (from register) still works.
    assert_eq!(app.get("/api/v1/auth/me", &s).await.status, StatusCode::OK);
    app.cleanup().await;
}

#[tokio::test]
async fn tokens_from_another_issuer_or_audience_are_rejected() {
    let app = spawn_app().await;
    let other = spawn_app_with(&[("JWT_AUDIENCE", "someone-else")]).await;
    let s = other.register("Other").await;
    // Same secret, different audience: the first app must refuse it.
    let r = app.get("/api/v1/auth/me", &s).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    app.cleanup().await;
    other.cleanup().await;
}

#[tokio::test]
async fn login_attempts_are_limited_per_email() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_EMAIL", "3")]).await;
    let s = app.register("Acme").await;
    for _ in 0..3 {
        assert_eq!(
            app.login(&s.email, "wrongPassword1").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = app.login(&s.email, &s.password).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        limited.body
    );
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry > 0 && retry <= 900, "Retry-After {retry}");
    assert!(!limited.message().is_empty());
    // Another account is not affected.
    let t = app.register("Beta").await;
    assert_eq!(
        app.login(&t.email, &t.password).await.status,
        StatusCode::OK
    );
    app.cleanup().await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_ip_and_successes_are_not() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_IP", "4")]).await;
    let s = app.register("Acme").await;
    for _ in 0..8 {
        assert_eq!(
            app.login(&s.email, &s.password).await.status,
            StatusCode::OK,
            "successes do not count"
        );
    }
    for i in 0..4 {
        let r = app
            .login(&format!("nobody{i}@example.com"), "wrongPassword1")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.login(&s.email, &s.password).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    app.cleanup().await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_ip() {
    let app = spawn_app_with(&[("REGISTER_MAX_PER_IP", "2")]).await;
    app.register("One").await;
    app.register("Two").await;
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({ "email": "three@example.com", "password": "securePassword123", "firstName": "T", "lastName": "H" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    app.cleanup().await;
}

#[tokio::test]
async fn forgot_and_reset_password_through_the_email_job() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;

    let unknown = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": "nobody@example.com" })),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::OK);
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": s.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.message(),
        unknown.message(),
        "the answer does not reveal accounts"
    );

    // The worker delivers the email to the outbox; read the token from it.
    let outbox = app.platform.db.unscoped::<bson::Document>("outbox");
    let email = app
        .eventually(Duration::from_secs(15), || {
            let outbox = outbox.clone();
            let to = s.email.clone();
            async move {
                outbox
                    .find_one(doc! { "to": to, "status": "LOGGED" })
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await
        .expect("the reset email reaches the outbox");
    assert_eq!(
        outbox.count_documents(doc! {}).await.unwrap_or(0),
        1,
        "no email for unknown accounts"
    );
    let text = email.get_str("text").unwrap_or_default();
    let token = text
        .split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the email carries a reset link");
    // Only a hash of the token is stored.
    let resets = app
        .platform
        .db
        .unscoped::<bson::Document>("password_resets");
    assert!(
        resets
            .find_one(doc! { "_id": token })
            .await
            .ok()
            .flatten()
            .is_none()
    );
    // The job record says it succeeded.
    let jobs = app.platform.db.unscoped::<bson::Document>("jobs");
    let job = jobs
        .find_one(doc! { "type": "send_email" })
        .await
        .ok()
        .flatten()
        .expect("job record");
    assert_eq!(job.get_str("status").unwrap_or_default(), "SUCCEEDED");
    // The reset link is never in the job record: its token travels sealed.
    let stored = serde_json::to_string(&job).unwrap_or_default();
    assert!(
        !stored.contains(token),
        "the job record holds the token in clear: {stored}"
    );

    let weak = app
        .request(
            Method::POST,
            "/api/v1/auth/reset-password",
            None,
            Some(json!({ "token": token, "password": "weak" })),
        )
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert_eq!(weak.body["details"]["field"], "password");

    let ok = app
        .request(
            Method::POST,
            "/api/v1/auth/reset-password",
            None,
            Some(json!({ "token": token, "password": "brandNewPass99" })),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let reuse = app
        .request(
            Method::POST,
            "/api/v1/auth/reset-password",
            None,
            Some(json!({ "token": token, "password": "brandNewPass98" })),
        )
        .await;
    assert_eq!(
        reuse.status,
        StatusCode::BAD_REQUEST,
        "a reset token works once"
    );
    assert_eq!(reuse.body["details"]["field"], "token");

    assert_eq!(
        app.login(&s.email, &s.password).await.status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.login(&s.email, "brandNewPass99").await;
    assert_eq!(fresh.status, StatusCode::OK);
    // Sessions from before the reset are over.
    assert_eq!(
        app.get("/api/v1/auth/me", &s).await.status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = Session {
        token: fresh.body["token"].as_str().unwrap_or_default().to_owned(),
        ..s.clone()
    };
    assert_eq!(
        app.get("/api/v1/auth/me", &fresh).await.status,
        StatusCode::OK
    );
    app.cleanup().await;
}

#[tokio::test]
async fn reset_email_goes_through_smtp_when_configured() {
    let smtp = aigentable_tests::fake_smtp::FakeSmtp::start(false).await;
    let app = spawn_app_with(&[
        ("SMTP_URL", &smtp.url()),
        ("EMAIL_FROM", "Support <support@acme.io>"),
    ])
    .await;
    let s = app.register("Acme").await;
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": s.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mail = app
        .eventually(Duration::from_secs(15), || {
            let smtp = smtp.clone();
            async move { smtp.messages().into_iter().next() }
        })
        .await
        .expect("the mail server received the reset email");
    assert_eq!(mail.from, "<support@acme.io>");
    assert_eq!(mail.to, vec![format!("<{}>", s.email)]);
    assert!(
        mail.data
            .contains("Subject: Reset your AIgentable password"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("reset-password?token="), "{}", mail.data);
    let outbox = app.platform.db.unscoped::<bson::Document>("outbox");
    let sent = app
        .eventually(Duration::from_secs(5), || {
            let outbox = outbox.clone();
            async move {
                outbox
                    .find_one(doc! { "status": "SENT" })
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await;
    assert!(sent.is_some(), "the outbox records the email as sent");
    assert_eq!(smtp.messages().len(), 1, "sent exactly once");
    app.cleanup().await;
}

#[tokio::test]
async fn a_refused_recipient_fails_the_email_job_without_retrying() {
    let smtp = aigentable_tests::fake_smtp::FakeSmtp::start(true).await;
    let app = spawn_app_with(&[("SMTP_URL", &smtp.url())]).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Acme").await;
    app.request(
        Method::POST,
        "/api/v1/auth/forgot-password",
        None,
        Some(json!({ "email": s.email })),
    )
    .await;
    let jobs = app.platform.db.unscoped::<bson::Document>("jobs");
    let job = app
        .eventually(Duration::from_secs(15), || {
            let jobs = jobs.clone();
            async move {
                jobs.find_one(doc! { "type": "send_email", "status": "FAILED" })
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await
        .expect("the job is marked failed");
    assert_eq!(
        job.get_i64("attempts").unwrap_or_default(),
        1,
        "a permanent refusal is not retried"
    );
    assert!(
        job.get_str("lastError")
            .unwrap_or_default()
            .contains("refused"),
        "{job:?}"
    );
    app.cleanup().await;
}
