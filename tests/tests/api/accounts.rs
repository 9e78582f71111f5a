//! Account changes and bounded auth work: the current password guards
//! password and email changes, a new email is verified before it is used,
//! one-time tokens never rest in clear in jobs, the outbox or backups,
//! login guesses are counted before they are checked, password hashing is
//! bounded, and client IPs come from trusted proxies only.

use std::time::Duration;

use bson::doc;
use futures::TryStreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use aigentable_jobs::types::RunBackup;
use aigentable_jobs::{JobClient, Requester};
use aigentable_tests::fake_smtp::FakeSmtp;
use aigentable_tests::{Session, TestApp, spawn_app, spawn_app_with};

async fn put_self(app: &TestApp, s: &Session, body: serde_json::Value) -> aigentable_tests::Reply {
    app.put(&format!("/api/v1/users/{}", s.user_id), s, body)
        .await
}

/// The token in the latest outbox email to `to` (the dev mailbox).
async fn token_from_outbox(app: &TestApp, to: &str, purpose: &str) -> String {
    let outbox = app.platform.db.unscoped::<bson::Document>("outbox");
    let email = app
        .eventually(Duration::from_secs(15), || async {
            outbox
                .find_one(doc! { "to": to, "purpose": purpose, "status": "LOGGED" })
                .await
                .ok()
                .flatten()
        })
        .await
        .unwrap_or_else(|| panic!("no {purpose} email to {to}"));
    let text = email.get_str("text").unwrap_or_default();
    text.split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the email carries a link")
        .to_owned()
}

#[tokio::test]
async fn changing_ones_own_password_needs_the_current_one() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let member = app.add_user(&admin, "TENANT_USER").await;

    let r = put_self(&app, &member, json!({ "password": "freshPassword77" })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "currentPassword");

    let r = put_self(
        &app,
        &member,
        json!({ "password": "freshPassword77", "currentPassword": "notMyPassword1" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "currentPassword");
    assert!(r.message().contains("incorrect"), "{:?}", r.body);
    assert_eq!(
        app.login(&member.email, &member.password).await.status,
        StatusCode::OK,
        "nothing changed"
    );

    let r = put_self(
        &app,
        &member,
        json!({ "password": "freshPassword77", "currentPassword": member.password }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        app.login(&member.email, "freshPassword77").await.status,
        StatusCode::OK
    );
    // Names need no password; an admin resets another user's password without theirs.
    let r = put_self(&app, &admin, json!({ "firstName": "Augusta" })).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &admin,
            json!({ "password": "adminChosen88" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.cleanup().await;
}

#[tokio::test]
async fn a_new_email_is_used_only_once_verified() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let new_email = format!("new-{}@example.com", uuid::Uuid::new_v4().simple());

    let r = put_self(&app, &s, json!({ "email": new_email })).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "currentPassword");

    let r = put_self(
        &app,
        &s,
        json!({ "email": new_email, "currentPassword": s.password }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["email"],
        s.email.as_str(),
        "unchanged until verified"
    );
    assert_eq!(r.body["pendingEmail"], new_email.as_str());

    // Not usable for login or resets yet.
    assert_eq!(
        app.login(&new_email, &s.password).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&s.email, &s.password).await.status,
        StatusCode::OK
    );

    let token = token_from_outbox(&app, &new_email, "email_verification").await;
    let stored = app
        .platform
        .db
        .unscoped::<bson::Document>("email_verifications");
    assert!(
        stored
            .find_one(doc! { "_id": &token })
            .await
            .ok()
            .flatten()
            .is_none(),
        "only a hash of the token is stored"
    );
    let verify = |token: String| {
        let app = &app;
        async move {
            app.request(
                Method::POST,
                "/api/v1/auth/verify-email",
                None,
                Some(json!({ "token": token })),
            )
            .await
        }
    };
    let bad = verify("not-a-token".into()).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["details"]["field"], "token");
    let ok = verify(token.clone()).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let again = verify(token).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "single use");

    assert_eq!(
        app.login(&new_email, &s.password).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.login(&s.email, &s.password).await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = app.login(&new_email, &s.password).await;
    assert_eq!(me.body["user"]["email"], new_email.as_str());
    assert!(me.body["user"]["pendingEmail"].is_null(), "{:?}", me.body);

    // The route is in the OpenAPI spec.
    let spec = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert!(
        spec.body["paths"]["/api/v1/auth/verify-email"]["post"].is_object(),
        "verify-email is documented"
    );
    app.cleanup().await;
}

fn contains(haystack: &str, token: &str) -> bool {
    haystack.contains(token)
}

#[tokio::test]
async fn reset_tokens_never_rest_in_clear_in_jobs_outbox_or_backups() {
    let smtp = FakeSmtp::start(false).await;
    let dir = std::env::temp_dir().join(format!(
        "aigentable-sessions-backup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let dir_str = dir.to_string_lossy().to_string();
    let app = spawn_app_with(&[("SMTP_URL", &smtp.url()), ("DATA_DIR", &dir_str)]).await;
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
        .expect("the reset email was sent");
    // Quoted-printable may wrap lines; the code line is short and the
    // token URL-safe base64.
    let body = mail.data.replace("=\r\n", "").replace("=3D", "=");
    let token = body
        .split("paste this code: ")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .expect("the mail carries the code");
    assert!(token.len() >= 32, "{token}");

    let everything = |name: &'static str| {
        let db = app.platform.db.clone();
        async move {
            let docs: Vec<bson::Document> = db
                .unscoped::<bson::Document>(name)
                .find(doc! {})
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("collect");
            serde_json::to_string(&docs).unwrap_or_default()
        }
    };
    let jobs = everything("jobs").await;
    assert!(jobs.contains("send_email"), "the job is recorded");
    assert!(!contains(&jobs, &token), "no clear token in job records");
    let outbox = everything("outbox").await;
    assert!(outbox.contains("reset-password?token="), "{outbox}");
    assert!(!contains(&outbox, &token), "no clear token in the outbox");

    // The token works: it is the real one.
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/reset-password",
            None,
            Some(json!({ "token": token, "password": "brandNewPass99" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // A backup holds no outbox and no token.
    let client = JobClient::connect(&app.platform).await.expect("client");
    let backup_id = aigentable_platform::ids::new_id();
    client
        .enqueue(
            &aigentable_platform::ids::TenantId::from_trusted("system"),
            Requester::System,
            RunBackup {
                backup_id: backup_id.clone(),
            },
        )
        .await
        .expect("enqueued");
    let backups = app.platform.db.unscoped::<bson::Document>("backups");
    app.eventually(Duration::from_secs(20), || async {
        backups
            .find_one(doc! { "_id": &backup_id, "status": "COMPLETED" })
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("the backup completed");
    let folder = dir.join("backups").join(&backup_id);
    assert!(
        !folder.join("outbox.jsonl").exists(),
        "no outbox in backups"
    );
    assert!(folder.join("jobs.jsonl").exists());
    for entry in std::fs::read_dir(&folder).expect("backup folder").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !contains(&text, &token),
            "{} holds the token",
            entry.path().display()
        );
    }
    app.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn parallel_wrong_logins_are_evaluated_at_most_up_to_the_limit() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_EMAIL", "3")]).await;
    let s = app.register("Acme").await;
    let tries = (0..12).map(|_| {
        let http = app.http.clone();
        let url = app.url("/api/v1/auth/login");
        let email = s.email.clone();
        async move {
            http.post(url)
                .json(&json!({ "email": email, "password": "wrongPassword1" }))
                .send()
                .await
                .map(|r| r.status())
                .ok()
        }
    });
    let statuses = futures::future::join_all(tries).await;
    let evaluated = statuses
        .iter()
        .filter(|s| **s == Some(StatusCode::UNAUTHORIZED))
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == Some(StatusCode::TOO_MANY_REQUESTS))
        .count();
    assert!(
        evaluated <= 3,
        "{evaluated} guesses were checked: {statuses:?}"
    );
    assert_eq!(evaluated + limited, 12, "{statuses:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_login_flood_is_refused_quickly_instead_of_queueing() {
    let app = spawn_app_with(&[
        ("PASSWORD_HASH_CONCURRENCY", "1"),
        ("PASSWORD_HASH_QUEUE", "0"),
        ("LOGIN_MAX_FAILURES_PER_IP", "1000"),
        ("LOGIN_MAX_FAILURES_PER_EMAIL", "1000"),
    ])
    .await;
    let s = app.register("Acme").await;
    let started = std::time::Instant::now();
    let tries = (0..16).map(|_| {
        let http = app.http.clone();
        let url = app.url("/api/v1/auth/login");
        let email = s.email.clone();
        async move {
            http.post(url)
                .json(&json!({ "email": email, "password": "wrongPassword1" }))
                .send()
                .await
                .map(|r| r.status())
                .ok()
        }
    });
    let statuses = futures::future::join_all(tries).await;
    let busy = statuses
        .iter()
        .filter(|s| **s == Some(StatusCode::SERVICE_UNAVAILABLE))
        .count();
    assert!(busy >= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(
            *s,
            Some(StatusCode::SERVICE_UNAVAILABLE | StatusCode::UNAUTHORIZED)
        )),
        "{statuses:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered in {:?}",
        started.elapsed()
    );
    // Afterwards the gate is whole again.
    assert_eq!(
        app.login(&s.email, &s.password).await.status,
        StatusCode::OK
    );
    app.cleanup().await;
}

async fn login_from(app: &TestApp, forwarded_for: &str, email: &str) -> StatusCode {
    app.http
        .post(app.url("/api/v1/auth/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({ "email": email, "password": "wrongPassword1" }))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::IM_A_TEAPOT)
}

#[tokio::test]
async fn client_ips_come_from_trusted_proxies_only() {
    // The test client connects from 127.0.0.1: here that is our proxy.
    let app = spawn_app_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
        ("LOGIN_MAX_FAILURES_PER_IP", "2"),
    ])
    .await;
    for i in 0..2 {
        assert_eq!(
            login_from(
                &app,
                "6.6.6.6, 198.51.100.7, 10.1.2.3",
                &format!("a{i}@example.com")
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The client forged its left-most hop; the limit follows the real one.
    assert_eq!(
        login_from(&app, "1.1.1.1, 198.51.100.7", "b@example.com").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from(&app, "198.51.100.8", "c@example.com").await,
        StatusCode::UNAUTHORIZED,
        "another client is not affected"
    );
    app.cleanup().await;

    // Without trusted proxies the header is ignored: the peer is the client.
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_IP", "2")]).await;
    for (i, hop) in ["1.1.1.1", "2.2.2.2"].iter().enumerate() {
        assert_eq!(
            login_from(&app, hop, &format!("d{i}@example.com")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&app, "3.3.3.3", "e@example.com").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.cleanup().await;
}
