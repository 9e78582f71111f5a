//! The knowledge base through the api: real files uploaded as the seed's
//! DocumentUpload component sends them, watched to READY, searched, re-
//! processed and deleted; hostile and malformed files refused or failed
//! with a reason.

use std::time::Duration;

use aigentable_platform::extract::fixtures;
use aigentable_tests::{Session, TestApp, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

async fn upload(
    app: &TestApp,
    s: &Session,
    files: Vec<(&str, Vec<u8>)>,
    agent_id: Option<&str>,
) -> aigentable_tests::Reply {
    let mut form = Form::new();
    for (name, bytes) in files {
        form = form.part("files", Part::bytes(bytes).file_name(name.to_owned()));
    }
    if let Some(agent) = agent_id {
        form = form.text("agentId", agent.to_owned());
    }
    form = form.text("category", "FAQ");
    let res = app
        .http
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&s.token)
        .header("X-Tenant-ID", &s.tenant_id)
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    TestApp::reply(res).await
}

async fn agent(app: &TestApp, s: &Session) -> String {
    let r = app
        .post("/api/v1/agents", s, json!({ "name": "Support" }))
        .await;
    r.body["id"].as_str().unwrap_or_default().to_owned()
}

async fn wait_status(app: &TestApp, s: &Session, id: &str, wanted: &str) -> Value {
    app.eventually(Duration::from_secs(30), || async {
        let r = app.get(&format!("/api/v1/documents/{id}"), s).await;
        (r.body["status"] == wanted).then_some(r.body)
    })
    .await
    .unwrap_or_else(|| panic!("document {id} never reached {wanted}"))
}

#[tokio::test]
async fn real_files_are_indexed_and_searchable() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent_id = agent(&app, &s).await;
    let pdf = fixtures::pdf_with_pages(&[
        &[
            "Refund policy overview.",
            "Refunds are issued within 14 days of purchase.",
        ],
        &[
            "Shipping information.",
            "Parcels ship from Rotterdam every weekday.",
        ],
        &[
            "Warranty terms.",
            "The warranty covers manufacturing defects for two years.",
        ],
    ]);
    let latin1 = b"Les cr\xe8mes br\xfbl\xe9es sont servies au caf\xe9 le dimanche.".to_vec();
    let csv = b"product,price,stock\nBlue kettle,39,12\nRed toaster,59,0\n".to_vec();
    let r = upload(
        &app,
        &s,
        vec![
            ("policies.pdf", pdf),
            ("menu.txt", latin1),
            ("catalog.csv", csv),
            ("hours.docx", fixtures::docx_fixture()),
            ("prices.xlsx", fixtures::xlsx_fixture()),
        ],
        Some(&agent_id),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let docs = r.body["documents"].as_array().cloned().unwrap_or_default();
    assert_eq!(docs.len(), 5);
    for d in &docs {
        assert_eq!(d["status"], "QUEUED");
        assert!(d["jobId"].as_str().is_some_and(|j| j.len() == 24));
        assert_eq!(d["agentId"], agent_id.as_str());
        assert_eq!(d["category"], "FAQ");
    }
    let pdf_id = docs[0]["id"].as_str().unwrap_or_default().to_owned();
    let ready = wait_status(&app, &s, &pdf_id, "READY").await;
    assert_eq!(ready["pages"], 3);
    assert_eq!(ready["kind"], "pdf");
    assert!(ready["chunkCount"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(ready["chunksDone"], ready["chunkCount"]);
    assert_eq!(ready["progress"], 100);
    for d in &docs[1..] {
        wait_status(&app, &s, d["id"].as_str().unwrap_or_default(), "READY").await;
    }

    // The right passage comes back, with its page.
    let r = app
        .get("/api/v1/search/documents?q=warranty%20defects&limit=3", &s)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let top = &r.body["results"][0];
    assert_eq!(top["documentId"], pdf_id.as_str(), "{:?}", r.body);
    assert_eq!(top["documentName"], "policies.pdf");
    assert!(
        top["snippet"]
            .as_str()
            .is_some_and(|t| t.contains("warranty")),
        "{top}"
    );
    assert!(top["page"].as_u64().is_some(), "{top}");
    // Latin-1 text was decoded, CSV rows are labelled by their header.
    let r = app
        .get("/api/v1/search/documents?q=cr%C3%A8mes%20caf%C3%A9", &s)
        .await;
    assert!(
        r.body["results"][0]["snippet"]
            .as_str()
            .is_some_and(|t| t.contains("crèmes")),
        "{:?}",
        r.body
    );
    let r = app
        .get("/api/v1/search/documents?q=Saturday%20hours", &s)
        .await;
    assert_eq!(
        r.body["results"][0]["documentName"], "hours.docx",
        "{:?}",
        r.body
    );
    let r = app
        .get("/api/v1/search/documents?q=pro%20plan%20price", &s)
        .await;
    assert_eq!(
        r.body["results"][0]["documentName"], "prices.xlsx",
        "{:?}",
        r.body
    );
    assert_eq!(r.body["results"][0]["sheet"], "Prices", "{:?}", r.body);
    let r = app
        .get(
            &format!("/api/v1/search/documents?q=toaster&agentId={agent_id}"),
            &s,
        )
        .await;
    assert!(
        r.body["results"][0]["snippet"]
            .as_str()
            .is_some_and(|t| t.contains("price: 59")),
        "{:?}",
        r.body
    );

    // Lists filter by agent, status and name.
    let list = app
        .get(
            &format!("/api/v1/documents?agentId={agent_id}&status=READY&search=POLICIES"),
            &s,
        )
        .await;
    assert_eq!(list.body["pagination"]["total"], 1, "{:?}", list.body);

    // Another tenant finds nothing and cannot touch the documents.
    let other = app.register("Other").await;
    let r = app.get("/api/v1/search/documents?q=warranty", &other).await;
    assert_eq!(
        r.body["results"],
        json!([]),
        "tenants never see each other's passages"
    );
    assert_eq!(
        app.get(&format!("/api/v1/documents/{pdf_id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/documents/{pdf_id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Re-processing is idempotent: same chunks, no duplicate passages.
    let pdf_hits = |body: &Value| {
        body["results"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|h| h["documentId"] == pdf_id.as_str())
                .count()
        })
    };
    let before = pdf_hits(
        &app.get(
            "/api/v1/search/documents?q=warranty%20refunds%20shipping&limit=50",
            &s,
        )
        .await
        .body,
    );
    assert!(before >= 2, "several chunks of the PDF match: {before}");
    let r = app
        .post(
            &format!("/api/v1/documents/{pdf_id}/process"),
            &s,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let again = wait_status(&app, &s, &pdf_id, "READY").await;
    assert_eq!(again["chunkCount"], ready["chunkCount"]);
    let after = pdf_hits(
        &app.get(
            "/api/v1/search/documents?q=warranty%20refunds%20shipping&limit=50",
            &s,
        )
        .await
        .body,
    );
    assert_eq!(
        after, before,
        "re-indexing replaced the passages instead of adding copies"
    );

    // Delete: gone at once, purged by a job, nothing left to find.
    let r = app.delete(&format!("/api/v1/documents/{pdf_id}"), &s).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(
        app.get(&format!("/api/v1/documents/{pdf_id}"), &s)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let job_id = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    app.eventually(Duration::from_secs(30), || async {
        (app.get(&format!("/api/v1/jobs/{job_id}"), &s).await.body["status"] == "SUCCEEDED")
            .then_some(())
    })
    .await
    .expect("the purge job succeeds");
    let r = app
        .get("/api/v1/search/documents?q=warranty%20defects", &s)
        .await;
    assert!(
        r.body["results"]
            .as_array()
            .is_some_and(|a| a.iter().all(|h| h["documentId"] != pdf_id.as_str())),
        "{:?}",
        r.body
    );
    let files = app
        .platform
        .db
        .unscoped::<bson::Document>("document_files.files");
    assert_eq!(
        files.count_documents(bson::doc! {}).await.unwrap_or(99),
        4,
        "the PDF's stored file is gone"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_before_anything_is_stored() {
    let app = spawn_app_with(&[("DOCUMENT_MAX_BYTES", "2048")]).await;
    let s = app.register("Acme").await;
    let zip_not_docx = fixtures::zip_of(&[("hello.txt", b"not a word document")]);
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "report.docx",
            zip_not_docx,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "scan.pdf",
            b"PK\x03\x04 not a pdf at all".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "image.png",
            b"\x89PNG\r\n\x1a\n....".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("empty.txt", Vec::new(), StatusCode::BAD_REQUEST),
        ("big.txt", vec![b'a'; 4096], StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (name, bytes, status) in cases {
        let r = upload(
            &app,
            &s,
            vec![("fine.txt", b"hello world".to_vec()), (name, bytes)],
            None,
        )
        .await;
        assert_eq!(r.status, status, "{name}: {:?}", r.body);
        assert!(
            r.message().contains(name),
            "the message names the file: {:?}",
            r.body
        );
    }
    let r = upload(
        &app,
        &s,
        vec![("fine.txt", b"hello".to_vec())],
        Some("65a1b2c3d4e5f6a7b8c9d0e1"),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "unknown agent: {:?}",
        r.body
    );
    let r = upload(&app, &s, Vec::new(), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let res = app
        .http
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&s.token)
        .json(&json!({ "files": [] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was stored by any refused request.
    assert_eq!(
        app.get("/api/v1/documents", &s).await.body["pagination"]["total"],
        0
    );
    let (files, chunks) = stored_counts(&app).await;
    assert_eq!((files, chunks), (0, 0), "no file and no orphan chunk");
    app.cleanup().await;
}

/// GridFS files and chunks stored for uploads.
async fn stored_counts(app: &TestApp) -> (u64, u64) {
    let count = |name: &'static str| async move {
        app.platform
            .db
            .unscoped::<bson::Document>(name)
            .count_documents(bson::doc! {})
            .await
            .unwrap_or(99)
    };
    (
        count("document_files.files").await,
        count("document_files.chunks").await,
    )
}

/// Text that does not compress to nothing: numbered lines of words.
fn long_text(bytes: usize) -> Vec<u8> {
    let mut out = String::with_capacity(bytes + 100);
    let mut i = 0u64;
    while out.len() < bytes {
        out.push_str(&format!(
            "Line {i}: the parcel number {} ships on day {}.\n",
            i.wrapping_mul(2_654_435_761) % 100_000,
            i % 31
        ));
        i += 1;
    }
    out.truncate(bytes);
    out.into_bytes()
}

#[tokio::test]
async fn files_stream_into_storage_whole_and_an_oversized_or_cut_upload_leaves_nothing() {
    let limit = 2 * 1024 * 1024;
    let app = spawn_app_with(&[("DOCUMENT_MAX_BYTES", &limit.to_string())]).await;
    let s = app.register("Acme").await;
    // Several GridFS chunks (255 KiB each), close to the limit.
    let big = long_text(limit - 1000);
    let r = upload(
        &app,
        &s,
        vec![
            ("big.txt", big.clone()),
            ("small.md", b"# Hi\n\nthere".to_vec()),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["documents"][0]["size"], big.len());
    let stored = app
        .platform
        .db
        .unscoped::<bson::Document>("document_files.files")
        .find_one(bson::doc! { "filename": "big.txt" })
        .await
        .ok()
        .flatten()
        .and_then(|f| f.get_object_id("_id").ok())
        .expect("big.txt stored");
    let bytes = aigentable_platform::files::load(&app.platform.db, &stored.to_hex())
        .await
        .expect("stored file loads");
    assert!(
        bytes == big,
        "the stored file is the uploaded one, byte for byte"
    );
    let id = r.body["documents"][0]["id"].as_str().unwrap_or_default();
    wait_status(&app, &s, id, "READY").await;
    let before = stored_counts(&app).await;
    assert_eq!(before.0, 2);

    // One file over the limit refuses the request, naming it; the file
    // streamed before it is deleted again.
    let r = upload(
        &app,
        &s,
        vec![
            ("fine.txt", long_text(600_000)),
            ("huge.txt", long_text(limit + 300_000)),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    assert_eq!(
        r.message(),
        "\"huge.txt\" is larger than the 2 MB limit per file"
    );
    assert_eq!(stored_counts(&app).await, before);

    // A client that goes away half-way through a file leaves nothing.
    let mut raw = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/documents/upload HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-tenant-id: {}\r\ncontent-type: multipart/form-data; boundary=XyZ\r\ncontent-length: 1900000\r\n\r\n--XyZ\r\ncontent-disposition: form-data; name=\"files\"; filename=\"cut.txt\"\r\ncontent-type: text/plain\r\n\r\n",
        s.token, s.tenant_id
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .expect("head sent");
    tokio::io::AsyncWriteExt::write_all(&mut raw, &long_text(900_000))
        .await
        .expect("half the file sent");
    // Let the api store a few chunks before the connection drops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(raw);
    let settled = app
        .eventually(Duration::from_secs(10), || async {
            (stored_counts(&app).await == before).then_some(())
        })
        .await;
    assert!(
        settled.is_some(),
        "no orphan chunks after a cut upload: {:?} vs {before:?}",
        stored_counts(&app).await
    );
    assert_eq!(
        app.get("/api/v1/documents", &s).await.body["pagination"]["total"],
        2
    );
    app.cleanup().await;
}

#[tokio::test]
async fn decompression_bombs_and_floods_of_text_fail_with_a_reason_and_the_worker_survives() {
    let app = spawn_app_with(&[("DOCUMENT_MAX_TEXT_BYTES", "2048")]).await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Acme").await;
    // 64 MiB of zeros packed into a ~64 KiB Word document.
    let bomb = fixtures::docx_bomb(64 * 1024 * 1024);
    assert!(bomb.len() < 200_000);
    let r = upload(
        &app,
        &s,
        vec![
            ("bomb.docx", bomb),
            ("long.txt", long_text(5000)),
            ("ok.md", b"# Opening hours\n\nMonday to Friday.".to_vec()),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = |i: usize| {
        r.body["documents"][i]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let failed = wait_status(&app, &s, &id(0), "FAILED").await;
    let reason = failed["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("\"word/document.xml\" inside the file is compressed")
            && reason.contains("decompression bomb"),
        "{reason}"
    );
    let failed = wait_status(&app, &s, &id(1), "FAILED").await;
    assert_eq!(
        failed["error"],
        "the document contains more than 2 KB of text, the limit per document; split it into smaller files"
    );
    wait_status(&app, &s, &id(2), "READY").await;
    app.cleanup().await;
}

#[tokio::test]
async fn unreadable_files_fail_with_a_reason_and_the_worker_survives() {
    let app = spawn_app().await;
    // It tests failures: the failed jobs are the point.
    app.allow_failed_jobs();
    let s = app.register("Acme").await;
    let mut truncated = fixtures::pdf_with_pages(&[&["Some text that will be cut off."]]);
    truncated.truncate(truncated.len() / 2);
    let mut corrupted = b"%PDF-1.5\n".to_vec();
    corrupted.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let r = upload(
        &app,
        &s,
        vec![
            ("cut.pdf", truncated),
            ("noise.pdf", corrupted),
            ("ok.md", b"# Title\n\nAll good here.".to_vec()),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let ids: Vec<String> = r.body["documents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for id in &ids[..2] {
        let failed = wait_status(&app, &s, id, "FAILED").await;
        assert!(
            failed["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{failed}"
        );
    }
    // The bad PDFs did not take the worker down: the good file still gets processed.
    wait_status(&app, &s, &ids[2], "READY").await;
    app.cleanup().await;
}
