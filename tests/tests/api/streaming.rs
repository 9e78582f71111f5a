//! Streamed replies: the fake provider streams its answer a word at a
//! time; staff watching the conversation get `message-delta` events in
//! order, coalesced, then the stored message with the same id and the whole
//! text. A stream cut in the middle is answered whole; a human taking over
//! mid-stream stops it. `POST /agents/{id}/test?stream=true` streams the
//! same way as Server-Sent Events, with a provider and without one.

use std::time::Duration;

use aigentable_jobs::types::AnswerMessage;
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::inbound::{channel, deliver, finished, said, stored_messages};
use aigentable_tests::socket::{TestSocket, connect};
use aigentable_tests::{Session, TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::replies::{agent_with_document, conversation_of, default_provider};

/// Long enough for the test to join the conversation before the first word.
const THINKING: Duration = Duration::from_millis(3000);

fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A conversation whose reply the fake is thinking about, and a staff
/// socket joined to it before the first word.
async fn watched_reply(
    app: &TestApp,
    s: &Session,
    fake: &FakeOpenAi,
    user: &str,
) -> (String, String, TestSocket) {
    let agent = agent_with_document(app, s, json!({})).await;
    default_provider(app, s, fake).await;
    let ch = channel(app, s, "Chat", Some(&agent)).await;
    fake.set_delay(THINKING);
    let (_, job) = deliver(app, s, &ch, vec![said(user, "m1", "Can I return items?")]).await;
    let conversation = conversation_of(app, s, user).await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let socket = connect(
        &app.base,
        "/",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    let ack = socket.join_conversation(&id).await;
    assert!(
        ack.as_ref().is_some_and(|a| a["ok"] == true),
        "joined: {ack:?}"
    );
    assert_eq!(
        fake.stream_chunks_sent(),
        0,
        "the socket joined before the answer started"
    );
    let record = finished(app, s, &job).await;
    let reply_job = record["result"]["replyJobs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (id, reply_job, socket)
}

/// `message-delta`s until the bot's `new-message`, which comes last.
async fn deltas_then_message(socket: &mut TestSocket) -> (Vec<Value>, Value) {
    let mut deltas = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some((event, value))) = tokio::time::timeout(left, socket.events.recv()).await
        else {
            panic!("no reply came; deltas so far: {deltas:?}");
        };
        match event.as_str() {
            "message-delta" => deltas.push(value),
            "new-message" if value["senderType"] == "AGENT" => return (deltas, value),
            _ => {}
        }
    }
}

fn assert_in_order(deltas: &[Value], message_id: &str) {
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["messageId"], message_id, "{d}");
        assert_eq!(d["index"], json!(i), "indexes count up from 0: {deltas:?}");
    }
}

fn joined(deltas: &[Value]) -> String {
    deltas.iter().filter_map(|d| d["delta"].as_str()).collect()
}

#[tokio::test]
async fn staff_see_the_reply_written_word_by_word_then_stored_whole() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let text = words(40);
    fake.push_reply(&text);
    fake.set_stream_interval(Duration::from_millis(5));
    let (conversation, _, mut socket) = watched_reply(&app, &s, &fake, "ana").await;

    let (deltas, message) = deltas_then_message(&mut socket).await;
    let id = message["id"].as_str().unwrap_or_default();
    assert_eq!(message["content"], text.as_str());
    assert_eq!(message["conversationId"], conversation.as_str());
    assert!(!deltas.is_empty(), "the text was shown while written");
    assert_in_order(&deltas, id);
    assert_eq!(joined(&deltas), text, "the deltas add up to the message");
    // 40 words 5 ms apart: coalesced every 50 ms, not one event per word.
    assert!(
        deltas.len() <= 20,
        "{} delta events for 40 words",
        deltas.len()
    );

    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].body["stream"], true);
    assert_eq!(chats[0].body["stream_options"]["include_usage"], true);
    let stored = stored_messages(&app, &s, &conversation).await;
    let reply = stored
        .iter()
        .find(|m| m.id == id)
        .expect("the reply is stored under the streamed id");
    let usage = reply.metadata.get_document("usage").expect("usage stored");
    assert_eq!(usage.get_i64("completionTokens"), Ok(40), "{usage}");
    let _ = socket.client.disconnect().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_is_answered_whole() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let text = words(12);
    fake.push_reply(&text);
    fake.push_reply(&text);
    fake.cut_next_stream_after(3);
    let (conversation, reply_job, mut socket) = watched_reply(&app, &s, &fake, "ben").await;

    let (deltas, message) = deltas_then_message(&mut socket).await;
    let id = message["id"].as_str().unwrap_or_default();
    assert_eq!(message["content"], text.as_str(), "the whole answer");
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2, "the broken stream, then one whole answer");
    assert_eq!(chats[0].body["stream"], true);
    assert_ne!(chats[1].body["stream"], true, "{}", chats[1].body);
    assert_in_order(&deltas, id);
    assert!(
        text.starts_with(&joined(&deltas)) && joined(&deltas).len() < text.len(),
        "what was shown is the start of the answer: {deltas:?}"
    );
    app.unrecorded_job_ran::<AnswerMessage>(&reply_job).await;
    let replies = stored_messages(&app, &s, &conversation)
        .await
        .into_iter()
        .filter(|m| m.reply_to.is_some())
        .count();
    assert_eq!(replies, 1);
    let _ = socket.client.disconnect().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_human_taking_over_mid_stream_stops_it() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    fake.push_reply(&words(60));
    fake.set_stream_interval(Duration::from_millis(100));
    let (conversation, reply_job, mut socket) = watched_reply(&app, &s, &fake, "cleo").await;

    let first = socket
        .next_named("message-delta", 30)
        .await
        .expect("the reply started");
    let r = app
        .put(
            &format!("/api/v1/conversations/{conversation}/assign"),
            &s,
            json!({ "userId": s.user_id }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let ended = socket
        .collect_until("message-delta", 30, |d| d["dropped"] == true)
        .await
        .expect("the viewers are told the text is dropped");
    assert_eq!(
        ended.last().map(|d| d["messageId"].clone()),
        Some(first["messageId"].clone())
    );
    app.unrecorded_job_ran::<AnswerMessage>(&reply_job).await;
    // The provider's connection was dropped: it stopped writing.
    let sent = fake.stream_chunks_sent();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.stream_chunks_sent(), sent, "the stream is closed");
    assert!(sent < 60, "stopped after {sent} of 60 words");
    let replies = stored_messages(&app, &s, &conversation)
        .await
        .into_iter()
        .filter(|m| m.reply_to.is_some())
        .count();
    assert_eq!(replies, 0, "nothing was sent to the customer");
    let _ = socket.client.disconnect().await;
    app.cleanup().await;
}

/// `(event, data)` of a Server-Sent Events body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

async fn streamed_test(app: &TestApp, s: &Session, agent: &str, query: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/api/v1/agents/{agent}/test{query}")))
        .bearer_auth(&s.token)
        .header("X-Tenant-ID", &s.tenant_id)
        .json(&json!({ "message": "When does the shop in Rotterdam open?" }))
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn the_agent_test_streams_as_server_sent_events() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;

    // Without a provider: the quoted passages, a sentence at a time.
    let res = streamed_test(&app, &s, &agent, "?stream=true").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        res.headers()
    );
    let events = sse_events(&res.text().await.unwrap_or_default());
    let (last, answer) = events.last().cloned().expect("events");
    assert_eq!(last, "answer", "{events:?}");
    assert_eq!(answer["retrievalOnly"], true);
    let deltas: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d.clone())
        .collect();
    assert!(!deltas.is_empty(), "{events:?}");
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["index"], json!(i));
    }
    assert_eq!(json!(joined(&deltas)), answer["reply"]);
    assert!(answer["jobId"].is_string());

    // With a provider: the model's words.
    let fake = FakeOpenAi::start().await;
    default_provider(&app, &s, &fake).await;
    let text = words(30);
    fake.push_reply(&text);
    fake.set_stream_interval(Duration::from_millis(10));
    let res = streamed_test(&app, &s, &agent, "?stream=true").await;
    assert_eq!(res.status(), StatusCode::OK);
    let events = sse_events(&res.text().await.unwrap_or_default());
    let (last, answer) = events.last().cloned().expect("events");
    assert_eq!(last, "answer", "{events:?}");
    assert_eq!(answer["reply"], text.as_str());
    assert_eq!(answer["usage"]["completionTokens"], 30);
    let deltas: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d.clone())
        .collect();
    assert!(deltas.len() > 1 && deltas.len() < 30, "{deltas:?}");
    assert_eq!(joined(&deltas), text);

    // What cannot stream answers as every other error does.
    let res = streamed_test(&app, &s, "000000000000000000000000", "?stream=true").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = streamed_test(&app, &s, &agent, "?stream=often").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("stream")),
        "{body}"
    );
    app.cleanup().await;
}

/// The widget script the api serves, run unchanged by node on a minimal DOM
/// with a real WebSocket: the visitor sees the reply grow word by word in
/// one bubble, which then holds the stored message.
#[tokio::test]
async fn the_widget_shows_the_reply_as_it_is_written() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio-client");
    assert!(
        dir.join("node_modules/ws").exists(),
        "the node client is not installed: run ./deploy/test.sh (it runs `npm ci` in tests/socketio-client)"
    );
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    default_provider(&app, &s, &fake).await;
    let channel = aigentable_tests::fake_providers::create_channel(
        &app,
        &s,
        json!({"type": "WEBSITE", "name": "Site", "agentId": agent, "config": {}}),
    )
    .await;
    let key = channel["publicKey"].as_str().unwrap_or_default().to_owned();
    let text = words(25);
    fake.push_reply("Hello there.");
    fake.push_reply(&text);
    fake.set_stream_interval(Duration::from_millis(40));
    let output = tokio::process::Command::new("node")
        .arg(dir.join("widget_check.mjs"))
        .args([&app.base, &key, &text])
        .output()
        .await
        .expect("node runs (deploy/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("widget_check.mjs prints JSON");
    assert_eq!(
        seen["texts"],
        json!(["Hello there.", text]),
        "one bubble per reply, the streamed one holding the whole text: {seen}"
    );
    let shown: Vec<&str> = seen["seen"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        shown.len() >= 3,
        "the text grew while it was written: {shown:?}"
    );
    for partial in &shown {
        assert!(
            text.starts_with(partial),
            "{partial:?} is a start of the reply"
        );
    }
    app.cleanup().await;
}

/// Telegram cannot stream: the customer sees "typing…" while the model
/// writes (sent before the reply), then the whole reply once. Without a
/// provider the answer is instant and no typing action is sent.
#[tokio::test]
async fn telegram_shows_typing_while_the_model_writes_then_gets_the_whole_reply() {
    use aigentable_tests::fake_providers::{app_with_fake, create_live_channel};
    let (app, providers) = app_with_fake(&[]).await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    let tg = create_live_channel(
        &app,
        &s,
        json!({"type": "TELEGRAM", "name": "Bot", "agentId": agent, "config": {"botToken": "77:tg-typing-token"}}),
    )
    .await;
    let id = tg["id"].as_str().unwrap_or_default();
    let secret = tg["verifyToken"].as_str().unwrap_or_default().to_owned();
    let update = |n: i64, chat: i64, text: &str| {
        json!({"update_id": n, "message": {"message_id": n, "from": {"id": chat, "is_bot": false, "first_name": "Ana"},
               "chat": {"id": chat, "type": "private"}, "date": 1717000000, "text": text}})
    };
    let post = |body: Value| {
        let req = app
            .http
            .post(app.url(&format!("/api/v1/webhooks/telegram/{id}")))
            .header("X-Telegram-Bot-Api-Secret-Token", &secret)
            .json(&body);
        async move { TestApp::reply(req.send().await.expect("sent")).await }
    };
    let sent_to = |chat: i64| {
        providers
            .requests()
            .into_iter()
            .filter(|r| r.body["chat_id"] == chat)
            .collect::<Vec<_>>()
    };

    // Retrieval-only: no typing.
    assert_eq!(
        post(update(1, 111, "When does the shop in Rotterdam open?"))
            .await
            .status,
        StatusCode::OK
    );
    let calls = app
        .eventually(Duration::from_secs(30), || async {
            let calls = sent_to(111);
            calls
                .iter()
                .any(|r| r.path.ends_with("/sendMessage"))
                .then_some(calls)
        })
        .await
        .expect("the retrieval-only reply was sent");
    assert!(
        calls.iter().all(|r| !r.path.ends_with("/sendChatAction")),
        "{calls:?}"
    );

    // With a model: typing first, then the whole reply, once.
    let fake = FakeOpenAi::start().await;
    default_provider(&app, &s, &fake).await;
    let text = words(8);
    fake.push_reply(&text);
    fake.set_stream_interval(Duration::from_millis(20));
    assert_eq!(
        post(update(2, 222, "Can I return items?")).await.status,
        StatusCode::OK
    );
    let calls = app
        .eventually(Duration::from_secs(30), || async {
            let calls = sent_to(222);
            calls
                .iter()
                .any(|r| r.path.ends_with("/sendMessage"))
                .then_some(calls)
        })
        .await
        .expect("the reply was sent");
    let paths: Vec<&str> = calls
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(paths, vec!["sendChatAction", "sendMessage"], "{calls:?}");
    assert_eq!(calls[0].body, json!({"chat_id": 222, "action": "typing"}));
    assert_eq!(calls[1].body["text"], text.as_str());
    app.cleanup().await;
}
