//! `GET /system/metrics`: platform administrators see the live figures,
//! read from the registry `/metrics` exposes.

use aigentable_platform::bootstrap::create_super_admin;
use aigentable_tests::{Session, spawn_app};
use reqwest::{Method, StatusCode};

/// The value of an unlabelled series in Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn platform_admins_see_live_figures_from_the_registry() {
    let app = spawn_app().await;
    let admin = app.register("Metrics").await;
    create_super_admin(&app.platform, "ops@aigentable.io", "rootPassword1")
        .await
        .expect("super admin");
    let login = app.login("ops@aigentable.io", "rootPassword1").await;
    let root = Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        ..admin.clone()
    };
    for _ in 0..5 {
        let r = app.get("/api/v1/agents", &admin).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // A finished job for the throughput: a document ingested.
    let document = app
        .upload_text(&admin, "faq.txt", "Refunds take five days.", None)
        .await;
    app.wait_document_ready(&admin, &document).await;
    let r = app.get("/api/v1/system/metrics", &admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // An email that failed for good an hour ago counts among the failures.
    app.allow_failed_jobs();
    let now = bson::DateTime::now();
    app.platform
        .db
        .unscoped::<bson::Document>("jobs")
        .insert_one(bson::doc! {
            "_id": aigentable_platform::ids::new_id(), "tenantId": &admin.tenant_id,
            "type": "send_email", "queue": "emails", "status": "FAILED", "progress": 0,
            "attempts": 1, "maxAttempts": 5, "lastError": "refused", "payload": {},
            "createdBy": "system", "createdAt": now, "updatedAt": now, "finishedAt": now,
        })
        .await
        .expect("failed job");

    let r = app.get("/api/v1/system/metrics", &root).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let m = &r.body;
    assert!(m["http"]["requestsTotal"].as_u64().unwrap_or(0) >= 7, "{m}");
    assert!(
        m["http"]["requestsPerSecond"].as_f64().unwrap_or(-1.0) > 0.0,
        "{m}"
    );
    let p50 = m["http"]["latencyMs"]["p50"].as_f64().unwrap_or(-1.0);
    let p99 = m["http"]["latencyMs"]["p99"].as_f64().unwrap_or(-1.0);
    assert!(p50 > 0.0 && p99 >= p50, "{m}");
    assert!(
        m["mongodbRoundTripMs"].as_f64().unwrap_or(-1.0) >= 0.0,
        "{m}"
    );
    assert!(m["redisRoundTripMs"].as_f64().unwrap_or(-1.0) >= 0.0, "{m}");
    assert!(
        m["process"]["residentMemoryBytes"].as_u64().unwrap_or(0) > 1_000_000,
        "{m}"
    );
    let queues: Vec<&str> = m["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    for q in ["inbound", "replies", "ingest", "maintenance"] {
        assert!(queues.contains(&q), "{q} missing: {queues:?}");
    }
    assert_eq!(m["socketConnections"], 0, "{m}");
    // The in-process workers beat: one process, serving every default queue.
    assert_eq!(m["workerProcesses"], 1, "{m}");
    let ingest = m["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["queue"] == "ingest")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ingest["workerProcesses"], 1, "{m}");
    let emails = m["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["queue"] == "emails")
        .cloned()
        .unwrap_or_default();
    assert_eq!(emails["failedLastDay"], 1, "{m}");
    // Nothing waits for a worker at the end of the test.
    assert_eq!(ingest["oldestJobAgeSeconds"].as_f64(), Some(0.0), "{m}");
    assert_eq!(ingest["failedLastDay"], 0, "{m}");
    assert!(
        ingest["finishedLastMinute"].as_i64().unwrap_or(0) >= 1,
        "{m}"
    );
    assert!(
        ingest["throughputPerSecond"].as_f64().unwrap_or(0.0) > 0.0,
        "{m}"
    );

    // The same registry: what /metrics shows matches.
    let text = app
        .http
        .request(Method::GET, app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .unwrap_or_default();
    let memory = series(&text, "aigentable_api_process_resident_memory_bytes").unwrap_or(0.0);
    assert!(memory > 1_000_000.0, "{text}");
    assert!(text.contains("aigentable_dependency_round_trip_seconds{dependency=\"mongodb\"}"));
    assert!(text.contains("aigentable_api_queue_jobs{"), "{text}");
    assert_eq!(
        series(&text, "aigentable_api_worker_processes_alive"),
        Some(1.0)
    );
    assert_eq!(series(&text, "aigentable_socketio_connections"), Some(0.0));
    app.cleanup().await;
}
