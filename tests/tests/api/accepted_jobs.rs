//! Every route that hands work to a job answers `202` with one shape,
//! `{jobId, job: {id, type, status, queue, enqueuedAt}}` beside its own
//! fields; the spec's list of 202 routes is walked so that a new one is
//! covered or fails here. Runs on an api without workers: the jobs wait in
//! Redis until the test drains their queue, and the teardown fails on any
//! left behind. Errors carry their cause in `details.reason`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use aigentable_jobs::Queue;
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_smtp::FakeSmtp;
use aigentable_tests::{Reply, inbound, spawn_app, spawn_app_without_workers};

/// Checks the shared 202 body and answers the job id.
fn accepted(route: &str, r: &Reply, job_type: &str, queue: &str) -> String {
    assert_eq!(r.status, StatusCode::ACCEPTED, "{route}: {:?}", r.body);
    let id = r.body["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("{route}: no jobId: {:?}", r.body));
    let job = &r.body["job"];
    assert_eq!(job["id"], id, "{route}: {:?}", r.body);
    assert_eq!(job["type"], job_type, "{route}: {:?}", r.body);
    assert_eq!(job["queue"], queue, "{route}: {:?}", r.body);
    assert!(
        matches!(job["status"].as_str(), Some("QUEUED" | "RUNNING")),
        "{route}: {:?}",
        r.body
    );
    assert!(
        job["enqueuedAt"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{route}: {:?}",
        r.body
    );
    id.to_owned()
}

#[tokio::test]
async fn every_route_that_enqueues_answers_the_same_202() {
    let smtp = FakeSmtp::start(true).await;
    let app = spawn_app_without_workers(&[("SMTP_URL", &smtp.url())]).await;
    let openai = FakeOpenAi::start().await;
    let admin = app.register("Accepted").await;
    let root = app.super_admin(&admin).await;
    let mut covered = BTreeSet::new();
    let mut cover = |method: &str, path: &str| covered.insert(format!("{method} {path}"));

    let upload = app
        .upload(
            &admin,
            vec![("faq.txt", b"Refunds take five days.".to_vec())],
            None,
        )
        .await;
    assert_eq!(upload.status, StatusCode::ACCEPTED, "{:?}", upload.body);
    let job = &upload.body["jobs"][0];
    assert_eq!(job["job"]["type"], "ingest_document", "{:?}", upload.body);
    assert_eq!(job["jobId"], upload.body["documents"][0]["jobId"]);
    cover("POST", "documents/upload");
    let document = upload.body["documents"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !app.pending_jobs().await.is_empty(),
        "without workers the ingestion waits in Redis"
    );
    app.drain(Queue::Ingest).await;
    let ready = app
        .get(&format!("/api/v1/documents/{document}"), &admin)
        .await;
    assert_eq!(ready.body["status"], "READY", "drained: {:?}", ready.body);

    let r = app
        .post(
            &format!("/api/v1/documents/{document}/process"),
            &admin,
            json!({}),
        )
        .await;
    accepted("process", &r, "ingest_document", "ingest");
    assert_eq!(r.body["document"]["id"], document.as_str());
    cover("POST", "documents/{id}/process");
    app.drain(Queue::Ingest).await;

    let agent = app
        .post("/api/v1/agents", &admin, json!({ "name": "Ava" }))
        .await;
    let agent = agent.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/train"),
            &admin,
            json!({ "documentIds": [document] }),
        )
        .await;
    accepted("train", &r, "train_agent", "training");
    assert_eq!(r.body["agentId"], agent.as_str());
    cover("POST", "agents/{id}/train");
    app.drain(Queue::Training).await;

    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/test"),
            &admin,
            json!({ "message": "How long do refunds take?" }),
        )
        .await;
    let test_job = accepted("agent test", &r, "generate_reply", "replies");
    cover("POST", "agents/{id}/test");
    app.drain(Queue::Replies).await;
    let answered = app.get(&format!("/api/v1/jobs/{test_job}"), &admin).await;
    assert_eq!(answered.body["status"], "SUCCEEDED", "{:?}", answered.body);
    assert!(
        answered.body["result"]["reply"]
            .as_str()
            .is_some_and(|t| t.contains("five days")),
        "{:?}",
        answered.body
    );

    let set = app
        .post(
            &format!("/api/v1/agents/{agent}/evals"),
            &admin,
            json!({ "name": "Refunds", "cases": [{ "question": "How long do refunds take?",
                    "expectedFacts": ["five days"], "expectedDocumentIds": [document] }] }),
        )
        .await;
    assert_eq!(set.status, StatusCode::CREATED, "{:?}", set.body);
    let set = set.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/evals/{set}/runs"),
            &admin,
            json!({}),
        )
        .await;
    let eval_job = accepted("eval run", &r, "eval_run", "replies");
    assert_eq!(r.body["run"]["jobId"], eval_job.as_str());
    assert_eq!(r.body["run"]["status"], "QUEUED");
    cover("POST", "agents/{id}/evals/{evalId}/runs");
    app.drain(Queue::Replies).await;
    let run = app.get(&format!("/api/v1/jobs/{eval_job}"), &admin).await;
    assert_eq!(run.body["status"], "SUCCEEDED", "{:?}", run.body);
    assert_eq!(
        run.body["result"]["totals"]["factScore"], 1.0,
        "{:?}",
        run.body
    );

    let provider = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({ "name": "Local", "type": "OPENAI_COMPATIBLE", "baseUrl": openai.base_url(),
                    "apiKey": "sk-test-abcd1234", "chatModel": "llama3.1" }),
        )
        .await;
    let provider = provider.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .post(
            &format!("/api/v1/ai-providers/{provider}/test"),
            &admin,
            json!({}),
        )
        .await;
    accepted("provider test", &r, "test_ai_provider", "integrations");
    cover("POST", "ai-providers/{id}/test");

    let channel = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({ "type": "WEBSITE", "name": "Site", "config": {} }),
        )
        .await;
    let channel = channel.body["id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .post(
            &format!("/api/v1/channels/{channel}/test"),
            &admin,
            json!({}),
        )
        .await;
    accepted("channel test", &r, "test_channel", "integrations");
    cover("POST", "channels/{id}/test");
    app.drain(Queue::Integrations).await;

    let site = inbound::channel(&app, &admin, "Staffed", None).await;
    let (_, inbound_job) = inbound::deliver(
        &app,
        &admin,
        &site,
        vec![inbound::said("cust-1", "m-1", "hello")],
    )
    .await;
    app.drain(Queue::Inbound).await;
    let processed = app
        .get(&format!("/api/v1/jobs/{inbound_job}"), &admin)
        .await;
    assert_eq!(
        processed.body["status"], "SUCCEEDED",
        "{:?}",
        processed.body
    );
    let conversations = app.get("/api/v1/conversations", &admin).await;
    let conversation = conversations.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &admin,
            json!({ "content": "Hello from staff" }),
        )
        .await;
    accepted("staff message", &r, "deliver_message", "outbound");
    assert_eq!(r.body["message"]["content"], "Hello from staff");
    cover("POST", "conversations/{id}/messages");
    app.drain(Queue::Outbound).await;

    let r = app
        .get(
            "/api/v1/analytics/export?format=csv&report=overview",
            &admin,
        )
        .await;
    accepted("export", &r, "export_analytics", "maintenance");
    assert!(r.body["exportId"].is_string(), "{:?}", r.body);
    cover("GET", "analytics/export");

    let r = app.post("/api/v1/system/backups", &root, json!({})).await;
    accepted("backup", &r, "run_backup", "maintenance");
    assert!(r.body["backup"]["id"].is_string(), "{:?}", r.body);
    cover("POST", "system/backups");
    let backup_id = r.body["backup"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.drain(Queue::Maintenance).await;
    let r = app
        .post(
            &format!("/api/v1/system/backups/{backup_id}/restore"),
            &root,
            json!({ "dryRun": true }),
        )
        .await;
    accepted("restore", &r, "restore_backup", "maintenance");
    assert_eq!(r.body["backupId"], backup_id.as_str(), "{:?}", r.body);
    cover("POST", "system/backups/{id}/restore");
    app.drain(Queue::Maintenance).await;

    // A refused email fails for good; its retry is accepted like any job.
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({ "email": admin.email })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.drain(Queue::Emails).await;
    let failed = app.get("/api/v1/jobs?status=FAILED", &admin).await;
    let email_job = failed.body["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no failed email: {:?}", failed.body))
        .to_owned();
    smtp.reject
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = app
        .post(
            &format!("/api/v1/jobs/{email_job}/retry"),
            &admin,
            json!({}),
        )
        .await;
    let retried = accepted("retry", &r, "send_email", "emails");
    assert_eq!(retried, email_job);
    assert_eq!(
        r.body["id"],
        email_job.as_str(),
        "the job view is beside it"
    );
    cover("POST", "jobs/{id}/retry");
    app.drain(Queue::Emails).await;

    let r = app
        .delete(&format!("/api/v1/documents/{document}"), &admin)
        .await;
    accepted("delete document", &r, "purge_document", "ingest");
    cover("DELETE", "documents/{id}");
    app.drain(Queue::Ingest).await;

    // Every 202 the spec documents outside the widget (whose visitors have
    // no jobs to follow) is one of the above.
    let spec = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .body;
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().into_iter().flatten() {
        let path = path.trim_start_matches("/api/v1/");
        for (method, op) in ops.as_object().into_iter().flatten() {
            if op["responses"].get("202").is_some() && !path.starts_with("widget/") {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert_eq!(documented, covered, "202 routes of the spec vs this test");
    app.cleanup().await;
}

#[tokio::test]
async fn errors_name_their_cause_in_details_reason() {
    let app = spawn_app().await;
    let admin = app.register("Reasons").await;

    // The tenant's only administrator.
    let r = app
        .put(
            &format!("/api/v1/users/{}", admin.user_id),
            &admin,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "CONFLICT");
    assert_eq!(r.body["details"]["reason"], "last_admin");

    // A file whose content is not what its name says.
    let r = app
        .upload(
            &admin,
            vec![("report.pdf", b"just some text".to_vec())],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{:?}", r.body);
    assert_eq!(r.body["details"]["reason"], "file_type_mismatch");

    // A status change the life cycle does not allow.
    let site = inbound::channel(&app, &admin, "Site", None).await;
    let (_, job) = inbound::deliver(
        &app,
        &admin,
        &site,
        vec![inbound::said("cust-1", "m-1", "hello")],
    )
    .await;
    inbound::finished(&app, &admin, &job).await;
    let list = app.get("/api/v1/conversations", &admin).await;
    let id = list.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut reasons = Vec::new();
    for status in ["CLOSED", "ACTIVE"] {
        let r = app
            .put(
                &format!("/api/v1/conversations/{id}/status"),
                &admin,
                json!({ "status": status }),
            )
            .await;
        reasons.push((r.status, r.body["details"]["reason"].clone()));
    }
    assert_eq!(
        reasons.last(),
        Some(&(StatusCode::CONFLICT, Value::from("invalid_transition"))),
        "{reasons:?}"
    );

    // Field errors keep `details.field` beside the reason.
    let r = app
        .post("/api/v1/agents", &admin, json!({ "name": "" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "name");
    assert_eq!(r.body["details"]["reason"], "invalid_field");
    let r = app
        .request(Method::GET, "/api/v1/auth/me", None, None)
        .await;
    assert_eq!(r.body["details"]["reason"], "unauthenticated");
    app.cleanup().await;
}
