//! Analytics: facts captured on the real webhook, widget, reply, delivery,
//! assignment and status paths; the numbers of a known scenario checked
//! against a count done by hand from the stored messages; the same numbers
//! after the hourly rollup (and again after re-running it); local days
//! across a DST change; late facts re-rolling their hour; tenant isolation;
//! validation; CSV and XLSX exports parsed back and compared with the JSON.

use std::io::Cursor;
use std::time::Duration;

use bson::doc;
use calamine::{Data, DataType, Reader, Xlsx};
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use aigentable_jobs::record::system_tenant;
use aigentable_jobs::types::RollupAnalytics;
use aigentable_jobs::{JobClient, Requester};
use aigentable_platform::analytics::facts::{self, Fact, FactKind};
use aigentable_platform::analytics::{DAILY, HOURLY, rollup};
use aigentable_platform::model::{Message, MessageDirection, SenderType};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{
    app_with_fake, create_agent, create_channel, create_live_channel, job_done, post_meta,
    whatsapp_text,
};
use aigentable_tests::{Reply, Session, TestApp};

use crate::replies::default_provider;

const SITE: &str = "https://shop.example.com";

async fn set_timezone(app: &TestApp, s: &Session, tz: &str) {
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", s.tenant_id),
            s,
            json!({"settings": {"timezone": tz}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

async fn widget_call(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> Reply {
    let mut req = app
        .http
        .post(app.url(path))
        .header("Origin", SITE)
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    TestApp::reply(req.send().await.expect("sent")).await
}

async fn all_messages(app: &TestApp, s: &Session) -> Vec<Message> {
    app.platform
        .db
        .unscoped::<Message>("messages")
        .find(doc! { "tenantId": &s.tenant_id })
        .sort(doc! { "createdAt": 1, "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("messages")
}

/// Waits until the tenant has `n` bot replies that left (`SENT`).
async fn wait_sent_replies(app: &TestApp, s: &Session, n: usize) {
    app.eventually(Duration::from_secs(60), || async {
        let sent = all_messages(app, s)
            .await
            .into_iter()
            .filter(|m| {
                m.sender_type == SenderType::Agent
                    && m.status == aigentable_platform::model::MessageStatus::Sent
            })
            .count();
        (sent >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("never {n} bot replies sent"));
}

async fn conversation_of(app: &TestApp, s: &Session, user: &str) -> String {
    app.eventually(Duration::from_secs(30), || async {
        let r = app.get("/api/v1/conversations?limit=100", s).await;
        r.body["conversations"].as_array().and_then(|l| {
            l.iter()
                .find(|c| c["externalUserId"] == user)
                .and_then(|c| c["id"].as_str().map(str::to_owned))
        })
    })
    .await
    .unwrap_or_else(|| panic!("no conversation for {user}"))
}

/// Response times counted by hand from stored messages: for each run of
/// customer messages, the time from its first message to the next bot or
/// staff message of the conversation.
fn hand_counted_responses(messages: &[Message]) -> Vec<i64> {
    let mut by_conversation: std::collections::BTreeMap<&str, Vec<&Message>> = Default::default();
    for m in messages {
        by_conversation
            .entry(m.conversation_id.as_str())
            .or_default()
            .push(m);
    }
    let mut out = Vec::new();
    for list in by_conversation.values() {
        let mut waiting: Option<DateTime<Utc>> = None;
        for m in list {
            let at = bson::DateTime::from_chrono(m.created_at).to_chrono();
            match (m.direction, m.sender_type) {
                (MessageDirection::Inbound, _) => {
                    waiting.get_or_insert(at);
                }
                (_, SenderType::Agent | SenderType::Human) => {
                    if let Some(since) = waiting.take() {
                        out.push((at - since).num_milliseconds());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

async fn rollup_now(app: &TestApp, s: &Session) {
    let client = JobClient::connect(&app.platform).await.expect("client");
    let hour = facts::hour_of(Utc::now());
    let job = client
        .enqueue(
            &system_tenant(),
            Requester::System,
            RollupAnalytics {
                hour: hour.to_rfc3339(),
            },
        )
        .await
        .expect("rollup queued");
    let done = app
        .eventually(Duration::from_secs(30), || async {
            let rec = app
                .platform
                .db
                .unscoped::<aigentable_jobs::JobRecord>("jobs")
                .find_one(doc! { "_id": &job.id })
                .await
                .ok()
                .flatten()?;
            matches!(
                rec.status,
                aigentable_jobs::JobStatus::Succeeded
                    | aigentable_jobs::JobStatus::Failed
                    | aigentable_jobs::JobStatus::Dead
            )
            .then_some(rec)
        })
        .await
        .expect("the rollup finished");
    assert_eq!(
        done.status,
        aigentable_jobs::JobStatus::Succeeded,
        "{:?} ({})",
        done.last_error,
        s.tenant_id
    );
}

async fn buckets(app: &TestApp, coll: &str) -> Vec<bson::Document> {
    app.platform
        .db
        .unscoped::<bson::Document>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("buckets")
}

async fn download(
    app: &TestApp,
    s: &Session,
    url: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let path = url
        .find("/api/v1/")
        .map(|i| &url[i..])
        .unwrap_or(url)
        .to_owned();
    let res = app
        .http
        .get(app.url(&path))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("download");
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.bytes().await.unwrap_or_default().to_vec(),
    )
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|x| (x - b).abs() < 0.006)
}

#[tokio::test]
async fn a_day_of_traffic_gives_the_hand_counted_numbers_before_and_after_the_rollup() {
    let (app, _fake) = app_with_fake(&[]).await;
    let openai = FakeOpenAi::start().await;
    let admin = app.register("Acme").await;
    set_timezone(&app, &admin, "Europe/Berlin").await;
    default_provider(&app, &admin, &openai).await;
    let agent = create_agent(&app, &admin).await;
    // Live only once the provider confirmed the token owns the number.
    let wa = create_live_channel(
        &app,
        &admin,
        json!({"type": "WHATSAPP", "name": "WA", "agentId": agent,
            "config": {"phoneNumberId": "PN900", "accessToken": "wa-token-0001", "appSecret": "wa-secret"}}),
    )
    .await;
    let wa_id = wa["id"].as_str().unwrap_or_default().to_owned();
    let site = create_channel(
        &app,
        &admin,
        json!({"type": "WEBSITE", "name": "Site", "agentId": agent, "config": {"allowedOrigins": [SITE]}}),
    )
    .await;
    let key = site["publicKey"].as_str().unwrap_or_default().to_owned();

    // Two WhatsApp customers and one widget visitor, each answered by the bot.
    for (from, wamid, text) in [
        ("31600000001", "wamid.A1", "Hello, are you open?"),
        ("31600000002", "wamid.B1", "Where is my order?"),
    ] {
        let r = post_meta(
            &app,
            "/api/v1/webhooks/whatsapp",
            &whatsapp_text("PN900", from, wamid, text),
            Some("wa-secret"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = widget_call(
        &app,
        &format!("/api/v1/widget/{key}/sessions"),
        None,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let visitor_token = r.body["token"].as_str().unwrap_or_default().to_owned();
    let r = widget_call(
        &app,
        &format!("/api/v1/widget/{key}/messages"),
        Some(&visitor_token),
        json!({"text": "Do you ship abroad?"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    wait_sent_replies(&app, &admin, 3).await;

    let c1 = conversation_of(&app, &admin, "31600000001").await;
    let c2 = conversation_of(&app, &admin, "31600000002").await;
    // C1: resolved with no staff message and no handoff: by the bot.
    let r = app
        .put(
            &format!("/api/v1/conversations/{c1}/status"),
            &admin,
            json!({"status": "RESOLVED"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // C2: handed to staff, the customer writes again, staff answers, closed.
    let r = app
        .put(
            &format!("/api/v1/conversations/{c2}/assign"),
            &admin,
            json!({"userId": admin.user_id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = post_meta(
        &app,
        "/api/v1/webhooks/whatsapp",
        &whatsapp_text("PN900", "31600000002", "wamid.B2", "Hello? Anyone?"),
        Some("wa-secret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    app.eventually(Duration::from_secs(30), || async {
        let n = all_messages(&app, &admin)
            .await
            .iter()
            .filter(|m| m.direction == MessageDirection::Inbound)
            .count();
        (n == 4).then_some(())
    })
    .await
    .expect("the second message of C2 is stored");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = app
        .post(
            &format!("/api/v1/conversations/{c2}/messages"),
            &admin,
            json!({"content": "Sorry for the wait, it ships today."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let r = app
        .put(
            &format!("/api/v1/conversations/{c2}/status"),
            &admin,
            json!({"status": "CLOSED"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Ratings: staff 3 on C2; the visitor 5, once.
    let r = app
        .put(
            &format!("/api/v1/conversations/{c2}/rating"),
            &admin,
            json!({"rating": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .put(
            &format!("/api/v1/conversations/{c2}/rating"),
            &admin,
            json!({"rating": 6}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "rating");
    let rating_path = format!("/api/v1/widget/{key}/rating");
    let r = widget_call(
        &app,
        &rating_path,
        Some(&visitor_token),
        json!({"rating": 5}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = widget_call(
        &app,
        &rating_path,
        Some(&visitor_token),
        json!({"rating": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = widget_call(&app, &rating_path, None, json!({"rating": 1})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Wait for the staff message to leave, then count by hand.
    app.eventually(Duration::from_secs(30), || async {
        all_messages(&app, &admin)
            .await
            .iter()
            .any(|m| {
                m.sender_type == SenderType::Human
                    && m.status == aigentable_platform::model::MessageStatus::Sent
            })
            .then_some(())
    })
    .await
    .expect("the staff message was sent");
    let messages = all_messages(&app, &admin).await;
    let customer = messages
        .iter()
        .filter(|m| m.sender_type == SenderType::Customer)
        .count() as i64;
    let bot = messages
        .iter()
        .filter(|m| m.sender_type == SenderType::Agent)
        .count() as i64;
    let staff = messages
        .iter()
        .filter(|m| m.sender_type == SenderType::Human)
        .count() as i64;
    assert_eq!((customer, bot, staff), (4, 3, 1));
    let responses = hand_counted_responses(&messages);
    assert_eq!(responses.len(), 4, "three bot answers and one staff answer");
    let mean = responses.iter().sum::<i64>() as f64 / responses.len() as f64 / 1000.0;
    let tokens: i64 = messages
        .iter()
        .filter_map(|m| m.metadata.get_document("usage").ok())
        .filter_map(|u| u.get_i64("totalTokens").ok())
        .sum();
    assert!(tokens > 0);

    let o = app.get("/api/v1/analytics/overview", &admin).await;
    assert_eq!(o.status, StatusCode::OK, "{:?}", o.body);
    for field in [
        "totalConversations",
        "activeAgents",
        "averageResponseTime",
        "customerSatisfaction",
        "conversationsToday",
        "messagesProcessed",
    ] {
        assert!(
            o.body[field].is_number(),
            "{field} is a number: {:?}",
            o.body
        );
    }
    assert_eq!(o.body["totalConversations"], 3);
    assert_eq!(o.body["conversationsToday"], 3);
    assert_eq!(o.body["activeAgents"], 1);
    assert_eq!(o.body["messagesProcessed"], customer + bot + staff);
    assert_eq!(o.body["customerSatisfaction"], 4.0);
    assert_eq!(o.body["ratingsCount"], 2);
    assert_eq!(o.body["botResolutionRate"], 0.5);
    assert!(
        close(&o.body["averageResponseTime"], mean),
        "{} vs {mean}",
        o.body["averageResponseTime"]
    );
    assert_eq!(o.body["summary"]["handoffs"], 1);
    assert_eq!(o.body["summary"]["resolved"], 2);
    assert_eq!(o.body["summary"]["resolvedByBot"], 1);
    assert_eq!(o.body["summary"]["responses"], 4);
    assert_eq!(o.body["summary"]["tokens"], tokens);
    assert_eq!(o.body["period"]["timezone"], "Europe/Berlin");

    let agents = app.get("/api/v1/analytics/agents", &admin).await;
    assert_eq!(agents.status, StatusCode::OK, "{:?}", agents.body);
    let row = &agents.body["agents"][0];
    assert_eq!(row["agentId"], agent.as_str());
    assert_eq!(row["conversations"], 3);
    assert_eq!(row["messages"], 8);
    assert!(close(&row["handoffRate"], 1.0 / 3.0));
    assert_eq!(row["customerSatisfaction"], 4.0);
    assert_eq!(row["tokens"], tokens);
    assert!(row["p90ResponseTime"].as_f64().is_some_and(|p| p >= 0.0));

    let channels = app.get("/api/v1/analytics/channels", &admin).await;
    assert_eq!(channels.status, StatusCode::OK, "{:?}", channels.body);
    let list = channels.body["channels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let wa_row = list
        .iter()
        .find(|c| c["channelId"] == wa_id.as_str())
        .expect("WhatsApp row");
    assert_eq!(wa_row["type"], "WHATSAPP");
    assert_eq!(wa_row["conversations"], 2);
    assert_eq!(wa_row["inboundMessages"], 3);
    assert_eq!(wa_row["outboundMessages"], 3);
    assert_eq!(wa_row["deliveryFailureRate"], 0.0);
    let site_row = list
        .iter()
        .find(|c| c["type"] == "WEBSITE")
        .expect("site row");
    assert_eq!(site_row["conversations"], 1);
    assert_eq!(site_row["customerSatisfaction"], 5.0);

    let conv = app
        .get("/api/v1/analytics/conversations?groupBy=day", &admin)
        .await;
    assert_eq!(conv.status, StatusCode::OK, "{:?}", conv.body);
    assert_eq!(conv.body["totals"]["conversations"], 3);
    assert_eq!(conv.body["byStatus"]["RESOLVED"], 1);
    assert_eq!(conv.body["byStatus"]["CLOSED"], 1);
    assert_eq!(conv.body["byStatus"]["ACTIVE"], 1);
    assert_eq!(conv.body["byChannelType"]["WHATSAPP"], 2);
    assert_eq!(conv.body["byChannelType"]["WEBSITE"], 1);
    let series = conv.body["series"].as_array().cloned().unwrap_or_default();
    assert!(series.len() >= 30, "one point per day: {}", series.len());
    let today = aigentable_platform::analytics::local_date(
        aigentable_platform::analytics::timezone("Europe/Berlin"),
        Utc::now(),
    )
    .format("%Y-%m-%d")
    .to_string();
    let point = series
        .iter()
        .find(|p| p["period"] == today.as_str())
        .expect("today's point");
    assert_eq!(point["conversations"], 3);
    assert_eq!(point["handedOff"], 1);
    assert_eq!(point["resolved"], 2);
    assert_eq!(
        series
            .iter()
            .map(|p| p["conversations"].as_i64().unwrap_or(0))
            .sum::<i64>(),
        3
    );

    // The rollup gives the same numbers, and re-running it the same buckets.
    let before = (o.body.clone(), agents.body.clone(), conv.body.clone());
    rollup_now(&app, &admin).await;
    let hourly = buckets(&app, HOURLY).await;
    assert!(!hourly.is_empty(), "hourly buckets written");
    let daily = buckets(&app, DAILY).await;
    assert!(
        daily.iter().any(|d| d.get_str("tz") == Ok("Europe/Berlin")),
        "daily buckets in the tenant's timezone"
    );
    let after = (
        app.get("/api/v1/analytics/overview", &admin).await.body,
        app.get("/api/v1/analytics/agents", &admin).await.body,
        app.get("/api/v1/analytics/conversations?groupBy=day", &admin)
            .await
            .body,
    );
    assert_eq!(before.0["summary"], after.0["summary"]);
    assert_eq!(
        before.0["totalConversations"],
        after.0["totalConversations"]
    );
    assert_eq!(
        before.0["conversationsToday"],
        after.0["conversationsToday"]
    );
    assert_eq!(before.1["agents"], after.1["agents"]);
    assert_eq!(before.2["series"], after.2["series"]);
    // (The job's idempotency key allows one job per hour: run it directly.)
    rollup::run(&app.platform.db, Utc::now())
        .await
        .expect("rollup again");
    assert_eq!(buckets(&app, HOURLY).await, hourly);
    assert_eq!(buckets(&app, DAILY).await, daily);

    // Exports: CSV of the agents report, XLSX of everything, parsed back.
    let r = app
        .get("/api/v1/analytics/export?format=csv&report=agents", &admin)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job = job_done(&app, &admin, r.body["jobId"].as_str().unwrap_or_default()).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job:?}");
    let url = job["result"]["downloadUrl"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(url.ends_with("/download"), "{job:?}");
    let (status, headers, bytes) = download(&app, &admin, &url).await;
    assert_eq!(status, StatusCode::OK);
    let disposition = headers
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"analytics-agents-"),
        "{disposition}"
    );
    let mut csv = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = csv
        .headers()
        .expect("header row")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), after.1["agents"].as_array().map_or(0, Vec::len));
    for (row, json_row) in rows
        .iter()
        .zip(after.1["agents"].as_array().into_iter().flatten())
    {
        for (name, cell) in header.iter().zip(row.iter()) {
            let expected = &json_row[name.as_str()];
            match expected {
                Value::Number(n) => {
                    assert_eq!(cell.parse::<f64>().ok(), n.as_f64(), "column {name}")
                }
                Value::String(s) => assert_eq!(cell, s, "column {name}"),
                Value::Null => assert_eq!(cell, "", "column {name}"),
                other => panic!("unexpected {other:?} in column {name}"),
            }
        }
    }

    let r = app
        .get("/api/v1/analytics/export?format=xlsx", &admin)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job = job_done(&app, &admin, r.body["jobId"].as_str().unwrap_or_default()).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job:?}");
    let (status, _, bytes) = download(
        &app,
        &admin,
        job["result"]["downloadUrl"].as_str().unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).expect("an XLSX file");
    assert_eq!(
        book.sheet_names(),
        vec!["overview", "conversations", "agents", "channels"]
    );
    let sheet = book.worksheet_range("overview").expect("overview sheet");
    let header: Vec<String> = sheet
        .rows()
        .next()
        .expect("header")
        .iter()
        .map(|c| c.to_string())
        .collect();
    let values = sheet.rows().nth(1).expect("values").to_vec();
    for (name, cell) in header.iter().zip(values.iter()) {
        match cell {
            Data::Float(x) => assert_eq!(after.0[name.as_str()].as_f64(), Some(*x), "{name}"),
            Data::Int(x) => assert_eq!(after.0[name.as_str()].as_i64(), Some(*x), "{name}"),
            Data::DateTime(_) => assert!(name.ends_with("Date"), "{name} is a date"),
            Data::String(s) => assert_eq!(name, "timezone", "{name}: {s}"),
            other => panic!("unexpected cell {other:?} in {name}"),
        }
    }
    let series = book.worksheet_range("conversations").expect("series sheet");
    let total: f64 = series
        .rows()
        .skip(1)
        .filter_map(|r| r.get(3).and_then(|c| c.get_float()))
        .sum();
    assert_eq!(total, 3.0, "the series sheet adds up to the conversations");

    // Tenant isolation.
    let other = app.register("Globex").await;
    let o = app.get("/api/v1/analytics/overview", &other).await;
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(o.body["totalConversations"], 0);
    assert_eq!(o.body["messagesProcessed"], 0);
    assert_eq!(o.body["customerSatisfaction"], 0.0);
    let r = app
        .get(&format!("/api/v1/analytics/agents?agentId={agent}"), &other)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .get(
            &format!("/api/v1/analytics/channels?channelId={wa_id}"),
            &other,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (status, _, _) = download(&app, &other, &url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = app
        .put(
            &format!("/api/v1/conversations/{c1}/rating"),
            &other,
            json!({"rating": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A tenant user reads analytics too.
    let user = app.add_user(&admin, "TENANT_USER").await;
    let r = app.get("/api/v1/analytics/overview", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["totalConversations"], 3);

    // Validation names the field.
    for (query, field) in [
        ("groupBy=year", "groupBy"),
        ("startDate=yesterday", "startDate"),
        ("startDate=2025-01-01&endDate=2026-06-01", "endDate"),
        ("startDate=2026-06-01&endDate=2026-05-01", "startDate"),
    ] {
        let r = app
            .get(&format!("/api/v1/analytics/conversations?{query}"), &admin)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.body["details"]["field"], field, "{query}");
    }
    let r = app
        .get("/api/v1/analytics/export?format=pdf&report=agents", &admin)
        .await;
    assert_eq!(r.body["details"]["field"], "format");
    let r = app
        .get("/api/v1/analytics/export?format=csv&report=all", &admin)
        .await;
    assert_eq!(r.body["details"]["field"], "report");
    app.cleanup().await;
}

fn fact(tenant: &str, channel: &str, at: DateTime<Utc>, n: usize) -> Fact {
    Fact {
        id: format!("test:{tenant}:{n}"),
        tenant_id: tenant.to_owned(),
        at,
        kind: FactKind::CustomerMessage,
        conversation_id: format!("conv-{n}"),
        agent_id: None,
        channel_id: channel.to_owned(),
        channel_type: "WEBSITE".to_owned(),
        started: true,
        response_ms: None,
        first_response: false,
        tokens: 0,
        rating: None,
        by_bot: false,
        duration_ms: None,
    }
}

fn series_counts(body: &Value) -> Vec<(String, i64, String)> {
    body["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["period"].as_str().unwrap_or_default().to_owned(),
                p["conversations"].as_i64().unwrap_or(-1),
                p["start"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn local_days_follow_the_tenant_timezone_across_dst_and_late_facts_re_roll() {
    let (app, _fake) = app_with_fake(&[]).await;
    let s = app.register("Acme").await;
    set_timezone(&app, &s, "Europe/Berlin").await;
    let other = app.register("Globex").await;
    let db = &app.platform.db;
    // Berlin moves to summer time on 2026-03-29 at 01:00 UTC: that day has
    // 23 hours, from 2026-03-28T23:00Z to 2026-03-29T22:00Z.
    let at = |d: u32, h: u32, m: u32| {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0)
            .single()
            .expect("a valid time")
    };
    let times = [
        at(28, 22, 30), // 23:30 on the 28th (CET)
        at(28, 23, 30), // 00:30 on the 29th
        at(29, 21, 30), // 23:30 on the 29th (CEST)
        at(29, 22, 30), // 00:30 on the 30th
    ];
    for (n, t) in times.iter().enumerate() {
        facts::record(db, &fact(&s.tenant_id, "site", *t, n))
            .await
            .expect("fact");
    }
    // Another tenant's traffic on the same day stays out.
    facts::record(db, &fact(&other.tenant_id, "elsewhere", at(29, 10, 0), 99))
        .await
        .expect("fact");

    let path =
        "/api/v1/analytics/conversations?startDate=2026-03-28&endDate=2026-03-30&groupBy=day";
    let live = app.get(path, &s).await;
    assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
    let expected = vec![
        (
            "2026-03-28".to_owned(),
            1,
            "2026-03-27T23:00:00Z".to_owned(),
        ),
        (
            "2026-03-29".to_owned(),
            2,
            "2026-03-28T23:00:00Z".to_owned(),
        ),
        (
            "2026-03-30".to_owned(),
            1,
            "2026-03-29T22:00:00Z".to_owned(),
        ),
    ];
    assert_eq!(series_counts(&live.body), expected);
    assert_eq!(live.body["series"][1]["end"], "2026-03-29T22:00:00Z");
    assert_eq!(live.body["period"]["startDate"], "2026-03-27T23:00:00Z");
    assert_eq!(live.body["period"]["endDate"], "2026-03-30T22:00:00Z");

    // Rolled up (the first run starts from the first fact): the same series,
    // now from the daily buckets in Berlin time.
    let summary = rollup::run(db, at(30, 23, 0)).await.expect("rollup");
    assert!(summary.hours >= 48, "{summary:?}");
    let daily = buckets(&app, DAILY).await;
    let day29: Vec<&bson::Document> = daily
        .iter()
        .filter(|d| {
            d.get_str("tenantId") == Ok(s.tenant_id.as_str())
                && d.get_str("day") == Ok("2026-03-29")
        })
        .collect();
    assert!(!day29.is_empty());
    assert!(day29.iter().all(|d| d.get_str("tz") == Ok("Europe/Berlin")));
    let rolled = app.get(path, &s).await;
    assert_eq!(series_counts(&rolled.body), expected);
    let weeks = app
        .get(
            "/api/v1/analytics/conversations?startDate=2026-03-28&endDate=2026-03-30&groupBy=week",
            &s,
        )
        .await;
    let w = series_counts(&weeks.body);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].0.as_str(), w[0].1), ("2026-03-23", 3));
    assert_eq!((w[1].0.as_str(), w[1].1), ("2026-03-30", 1));

    // Re-running the hour changes nothing.
    let hourly = buckets(&app, HOURLY).await;
    rollup::run(db, at(30, 23, 0)).await.expect("rollup again");
    assert_eq!(buckets(&app, HOURLY).await, hourly);
    assert_eq!(buckets(&app, DAILY).await, daily);

    // A late fact for the 29th: its hour is re-rolled by the next run.
    facts::record(db, &fact(&s.tenant_id, "site", at(29, 12, 0), 7))
        .await
        .expect("late fact");
    rollup::run(db, at(30, 23, 0))
        .await
        .expect("rollup after a late fact");
    let late = app.get(path, &s).await;
    assert_eq!(series_counts(&late.body)[1].1, 3, "{:?}", late.body);
    let other_view = app.get(path, &other).await;
    assert_eq!(other_view.body["totals"]["conversations"], 1);
    app.cleanup().await;
}
