//! Prometheus metrics of the api: labels are route templates (a client
//! cannot create series at will), `METRICS_TOKEN` protects `/metrics`, and
//! `METRICS_PORT` moves it off the public port.

use std::collections::BTreeSet;

use aigentable_tests::{TestApp, spawn_app_with};
use reqwest::StatusCode;

pub(crate) async fn scrape(app: &TestApp, url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = app.http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("metrics request");
    let status = res.status();
    (status, res.text().await.unwrap_or_default())
}

/// The label sets of the request counter.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("aigentable_http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(labels, _)| labels.to_owned()))
        .collect()
}

#[tokio::test]
async fn random_paths_add_no_series() {
    let app = spawn_app_with(&[]).await;
    let s = app.register("Acme").await;
    // Warm up one request of each kind the loop makes.
    let warm = uuid::Uuid::new_v4().simple().to_string();
    app.get(&format!("/api/v1/users/{warm}"), &s).await;
    app.get(&format!("/api/v1/nothing-{warm}"), &s).await;
    let _ = app
        .http
        .request(
            reqwest::Method::from_bytes(b"WARMUP").expect("method"),
            app.url(&format!("/x{warm}")),
        )
        .send()
        .await;
    // The first scrape is itself counted after it answers.
    scrape(&app, &app.url("/metrics"), None).await;
    let (_, before) = scrape(&app, &app.url("/metrics"), None).await;
    let before = series(&before);
    assert!(
        before
            .iter()
            .any(|l| l.contains("route=\"/api/v1/users/{id}\"")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|l| l.contains("route=\"unmatched\"")),
        "{before:?}"
    );

    let mut randoms = Vec::new();
    for i in 0..50 {
        let r = uuid::Uuid::new_v4().simple().to_string();
        match i % 3 {
            0 => {
                app.get(&format!("/api/v1/users/{r}"), &s).await;
            }
            1 => {
                app.get(&format!("/api/v1/{r}/deeper/{i}"), &s).await;
            }
            _ => {
                let method = format!("M{}", &r[..8]).to_uppercase();
                let _ = app
                    .http
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                        app.url(&format!("/{r}")),
                    )
                    .send()
                    .await;
            }
        }
        randoms.push(r);
    }
    let (_, after) = scrape(&app, &app.url("/metrics"), None).await;
    let after = series(&after);
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.is_empty(), "50 random requests added series: {new:?}");
    for r in &randoms {
        assert!(
            !after.iter().any(|l| l.contains(&r[..12])),
            "{r} became a label"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_token_is_enforced() {
    let token = "metrics-token-0123456789";
    let app = spawn_app_with(&[("METRICS_TOKEN", token)]).await;
    let url = app.url("/metrics");
    let (status, body) = scrape(&app, &url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("aigentable_http_requests_total"));
    let (status, _) = scrape(&app, &url, Some("metrics-token-wrong-000000")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = scrape(&app, &url, Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("aigentable_http_requests_total"), "{body}");
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_port_moves_metrics_off_the_public_port() {
    let port = aigentable_tests::services::free_port();
    let token = "metrics-token-0123456789";
    let port_text = port.to_string();
    let app = spawn_app_with(&[("METRICS_PORT", &port_text), ("METRICS_TOKEN", token)]).await;
    app.get("/healthz", &app.register("Acme").await).await;
    let (status, _) = scrape(&app, &app.url("/metrics"), Some(token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let separate = format!("http://127.0.0.1:{port}/metrics");
    let (status, body) = app
        .eventually(std::time::Duration::from_secs(5), || async {
            let r = app
                .http
                .get(&separate)
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            let status = r.status();
            Some((status, r.text().await.unwrap_or_default()))
        })
        .await
        .expect("metrics port answers");
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("aigentable_http_requests_total"), "{body}");
    let (status, _) = scrape(&app, &separate, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.cleanup().await;
}
