//! Replies to customer messages: grounded chat completions against a fake
//! OpenAI-compatible provider (passages, model, temperature, history),
//! retries on 429, the fallback with a handoff to a human when the provider
//! keeps failing, the retrieval-only responder (no AI provider), exactly
//! one reply per message, one reply to a burst, and no reply once staff
//! took over.

use std::time::Duration;

use aigentable_jobs::types::AnswerMessage;
use aigentable_platform::model::{
    AiProvider, AiProviderType, Message, MessageDirection, MessageStatus, SenderType,
};
use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::inbound::{
    channel, deliver, finished, process, said, set_agent_active, stored_messages, tenant,
};
use aigentable_tests::socket::connect;
use aigentable_tests::{Session, TestApp, spawn_app};
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const HOURS: &str = "Opening hours. Our shop in Rotterdam opens at nine in the morning \
and closes at six in the evening, Monday to Saturday.\n\nReturns. Unused items can be \
returned within thirty days with the receipt.";

/// An active agent with one READY text document.
pub async fn agent_with_document(app: &TestApp, s: &Session, extra: Value) -> String {
    let mut body =
        json!({ "name": "Support", "fallbackMessage": "Let me get a colleague for you." });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = app.post("/api/v1/agents", s, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let doc = app
        .upload_text(s, "store-hours.txt", HOURS, Some(&agent))
        .await;
    app.wait_document_ready(s, &doc).await;
    agent
}

fn is_reply(m: &Message) -> bool {
    m.direction == MessageDirection::Outbound
        && matches!(m.sender_type, SenderType::Agent | SenderType::System)
}

/// Waits until the conversation of `user` has `n` bot replies.
async fn replies(app: &TestApp, s: &Session, conversation: &str, n: usize) -> Vec<Message> {
    app.eventually(Duration::from_secs(30), || async {
        let replies: Vec<Message> = stored_messages(app, s, conversation)
            .await
            .into_iter()
            .filter(is_reply)
            .collect();
        (replies.len() >= n).then_some(replies)
    })
    .await
    .unwrap_or_else(|| panic!("conversation {conversation} never had {n} replies"))
}

pub async fn conversation_of(app: &TestApp, s: &Session, user: &str) -> Value {
    app.eventually(Duration::from_secs(10), || async {
        let r = app.get("/api/v1/conversations?limit=100", s).await;
        r.body["conversations"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["externalUserId"] == user).cloned())
    })
    .await
    .unwrap_or_else(|| panic!("no conversation for {user}"))
}

#[tokio::test]
async fn without_a_provider_the_best_passage_answers_once() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    let mut sock = connect(
        &app.base,
        "/",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (event, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m1", "When does the shop in Rotterdam open?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let conversation = conversation_of(&app, &s, "ana").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let replies_now = replies(&app, &s, &id, 1).await;
    let reply = &replies_now[0];
    assert_eq!(reply.sender_type, SenderType::Agent);
    assert!(
        reply.content.contains("opens at nine in the morning"),
        "{}",
        reply.content
    );
    assert!(
        reply.content.contains("store-hours.txt"),
        "{}",
        reply.content
    );
    assert_eq!(reply.metadata.get_bool("retrievalOnly").ok(), Some(true));
    let sources = reply
        .metadata
        .get_array("sources")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        sources
            .first()
            .and_then(|s| s.as_document())
            .and_then(|d| d.get_str("documentName").ok()),
        Some("store-hours.txt")
    );
    assert!(reply.reply_to.is_some());

    // The browsers saw the reply.
    let seen = async {
        loop {
            let ev = sock.next_named("new-message", 15).await?;
            if ev["senderType"] == "AGENT" {
                return Some(ev);
            }
        }
    }
    .await
    .expect("new-message for the reply");
    assert_eq!(seen["conversationId"], id.as_str());

    // The same webhook event again: still one message and one reply.
    let again = process(&app, &s, &ch, &event).await;
    finished(&app, &s, &again).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = stored_messages(&app, &s, &id).await;
    assert_eq!(all.len(), 2, "{all:?}");

    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["status"], "ACTIVE");

    // Nothing matches: the fallback goes out and a human takes over.
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m2", "xylophone quaternion zeppelin")],
    )
    .await;
    finished(&app, &s, &job).await;
    let now = replies(&app, &s, &id, 2).await;
    let fallback = &now[1];
    assert_eq!(fallback.content, "Let me get a colleague for you.");
    assert_eq!(fallback.metadata.get_bool("fallback").ok(), Some(true));
    let waiting = app
        .eventually(Duration::from_secs(10), || async {
            let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
            (r.body["status"] == "WAITING").then_some(r.body)
        })
        .await
        .expect("the conversation is handed to a human");
    // Nothing matched: staff see why.
    assert_eq!(waiting["handoff"]["reason"], "low_confidence", "{waiting}");
    assert_eq!(
        waiting["handoff"]["messageId"],
        now[1].reply_to.as_deref().unwrap_or("?")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_burst_gets_one_reply_and_staff_silence_the_bot() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;

    // Two messages in one delivery: the last is answered, once.
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![
            said("bob", "b1", "Hello"),
            said("bob", "b2", "Can I return items?"),
        ],
    )
    .await;
    finished(&app, &s, &job).await;
    let conversation = conversation_of(&app, &s, "bob").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let got = replies(&app, &s, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let all = stored_messages(&app, &s, &id).await;
    let bot: Vec<&Message> = all.iter().filter(|m| is_reply(m)).collect();
    assert_eq!(bot.len(), 1, "{all:?}");
    let second = all
        .iter()
        .find(|m| m.external_message_id.as_deref() == Some("b2"))
        .expect("b2 stored");
    assert_eq!(got[0].reply_to.as_deref(), Some(second.id.as_str()));
    assert!(got[0].content.contains("thirty days"), "{}", got[0].content);

    // A staff member takes over: the bot stays silent.
    let member = app.add_user(&s, "TENANT_USER").await;
    let r = app
        .put(
            &format!("/api/v1/conversations/{id}/assign"),
            &s,
            json!({ "userId": member.user_id }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (_, job) = deliver(&app, &s, &ch, vec![said("bob", "b3", "When do you open?")]).await;
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["result"]["stored"], 1);
    assert_eq!(record["result"]["replyJobs"], json!([]), "{record}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = stored_messages(&app, &s, &id).await;
    assert_eq!(all.iter().filter(|m| is_reply(m)).count(), 1, "{all:?}");
    app.cleanup().await;
}

/// The tenant's default AI provider, pointed at the fake.
pub async fn default_provider(app: &TestApp, s: &Session, fake: &FakeOpenAi) -> String {
    let now = chrono::Utc::now();
    let provider = AiProvider {
        id: aigentable_platform::ids::new_id(),
        tenant_id: tenant(s),
        name: "Fake".into(),
        provider_type: AiProviderType::OpenaiCompatible,
        base_url: Some(fake.base_url()),
        api_version: None,
        api_key: Some(app.platform.secrets.seal("sk-test-abcd")),
        api_key_last4: Some("abcd".into()),
        chat_model: "fake-chat".into(),
        embedding_model: None,
        embedding_dimensions: None,
        is_default: true,
        is_active: true,
        created_at: now,
        updated_at: now,
    };
    app.platform
        .db
        .scoped::<AiProvider>(&tenant(s))
        .insert(&provider)
        .await
        .expect("provider stored");
    provider.id
}

async fn token_usage(app: &TestApp, s: &Session, purpose: &str) -> u64 {
    app.platform
        .db
        .unscoped::<bson::Document>("token_usage")
        .count_documents(bson::doc! { "tenantId": &s.tenant_id, "purpose": purpose })
        .await
        .unwrap_or(0)
}

/// The tokens of the tenant's `token_usage` entries (LLM calls other than
/// stored replies).
async fn tokens_in_entries(app: &TestApp, s: &Session) -> i64 {
    let entries: Vec<bson::Document> = app
        .platform
        .db
        .unscoped::<bson::Document>("token_usage")
        .find(bson::doc! { "tenantId": &s.tenant_id })
        .await
        .expect("token usage")
        .try_collect()
        .await
        .expect("token usage");
    entries
        .iter()
        .map(|e| e.get_i64("totalTokens").unwrap_or_default())
        .sum()
}

#[tokio::test]
async fn replies_are_grounded_on_passages_with_the_agents_model() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(
        &app,
        &s,
        json!({
            "model": "gpt-test-mini", "temperature": 0.3, "maxTokens": 222,
            "personality": "Cheerful and brief", "instructions": "Greet the customer by name."
        }),
    )
    .await;
    default_provider(&app, &s, &fake).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    fake.push_reply("We open at nine, see you then!");

    let (event, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m1", "When does the Rotterdam shop open?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let conversation = conversation_of(&app, &s, "ana").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let got = replies(&app, &s, &id, 1).await;
    let reply = &got[0];
    assert_eq!(reply.content, "We open at nine, see you then!");
    assert_eq!(reply.sender_type, SenderType::Agent);
    let sources = reply
        .metadata
        .get_array("sources")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        sources
            .first()
            .and_then(|s| s.as_document())
            .and_then(|d| d.get_str("documentName").ok()),
        Some("store-hours.txt"),
        "{:?}",
        reply.metadata
    );
    assert!(reply.metadata.get_document("usage").is_ok());
    assert!(reply.metadata.get("latencyMs").is_some());
    assert!(reply.metadata.get_bool("retrievalOnly").is_err());

    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 1);
    let body = &chats[0].body;
    assert_eq!(body["model"], "gpt-test-mini");
    let t = body["temperature"].as_f64().unwrap_or(-1.0);
    assert!((t - 0.3).abs() < 1e-3, "temperature {t}");
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(max, 222, "{body}");
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap_or_default();
    assert!(
        system.contains("opens at nine in the morning"),
        "the retrieved passage is in the prompt: {system}"
    );
    assert!(system.contains("[1]") && system.contains("store-hours.txt"));
    assert!(system.contains("Cheerful and brief") && system.contains("Greet the customer"));
    assert!(system.contains("don't know"));
    let last = messages.last().cloned().unwrap_or_default();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"], "When does the Rotterdam shop open?");
    // The reply's tokens are counted on the reply itself, not in an entry
    // of their own, by the usage endpoint and the plan's counters alike.
    assert_eq!(token_usage(&app, &s, "reply").await, 0);
    let spent = reply
        .metadata
        .get_document("usage")
        .ok()
        .and_then(|u| u.get_i64("totalTokens").ok())
        .unwrap_or_default();
    assert!(spent > 0, "{:?}", reply.metadata);
    assert_eq!(reply.billed_tokens, Some(spent));
    let usage = app
        .get(&format!("/api/v1/tenants/{}/usage", s.tenant_id), &s)
        .await;
    let others = tokens_in_entries(&app, &s).await;
    assert_eq!(
        usage.body["llmTokens"].as_i64(),
        Some(spent + others),
        "{:?}",
        usage.body
    );
    let (_, counted) = aigentable_platform::usage::period_messages_and_tokens(
        &app.platform.db,
        &app.platform.kv,
        &tenant(&s),
        aigentable_platform::usage::current_period(chrono::Utc::now()),
    )
    .await
    .expect("usage counters");
    assert_eq!(i64::try_from(counted).ok(), Some(spent + others));
    let reply_id = reply.id.clone();
    let sent = app
        .eventually(Duration::from_secs(15), || async {
            stored_messages(&app, &s, &id)
                .await
                .into_iter()
                .find(|m| m.id == reply_id)
                .filter(|m| matches!(m.status, MessageStatus::Sent | MessageStatus::Delivered))
        })
        .await;
    assert!(sent.is_some(), "the reply is delivered through the channel");

    // The same event again: no second reply and no second provider call.
    let again = process(&app, &s, &ch, &event).await;
    finished(&app, &s, &again).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stored_messages(&app, &s, &id).await.len(), 2);
    assert_eq!(fake.chat_requests().len(), 1);

    // The next question carries the conversation so far.
    fake.push_reply("Returns are free within thirty days.");
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m2", "And returns?")]).await;
    finished(&app, &s, &job).await;
    replies(&app, &s, &id, 2).await;
    let chats = fake.chat_requests();
    let messages = chats[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let turns: Vec<(String, String)> = messages
        .iter()
        .skip(1)
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        vec![
            ("user".into(), "When does the Rotterdam shop open?".into()),
            ("assistant".into(), "We open at nine, see you then!".into()),
            ("user".into(), "And returns?".into()),
        ]
    );
    app.cleanup().await;
}

/// Replies read the tenant, the agent and its provider from a cache in
/// each worker: a change made through the API is what the very next
/// message gets, on every process (the writes announce it).
#[tokio::test]
async fn the_next_reply_uses_the_agent_and_provider_as_just_changed() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({ "model": "model-one" })).await;
    default_provider(&app, &s, &fake).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    let ask = |n: usize, text: &'static str| {
        let (app, s, ch) = (&app, &s, &ch);
        async move {
            let (_, job) = deliver(app, s, ch, vec![said("ana", &format!("m{n}"), text)]).await;
            finished(app, s, &job).await
        }
    };
    fake.push_reply("One.");
    ask(1, "When do you open?").await;
    let id = conversation_of(&app, &s, "ana").await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    replies(&app, &s, &id, 1).await;
    assert_eq!(fake.chat_requests()[0].body["model"], "model-one");

    let r = app
        .put(
            &format!("/api/v1/agents/{agent}"),
            &s,
            json!({ "model": "model-two" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    fake.push_reply("Two.");
    ask(2, "And on Sunday?").await;
    replies(&app, &s, &id, 2).await;
    assert_eq!(fake.chat_requests()[1].body["model"], "model-two");

    // A new default provider answers the next message.
    let other = FakeOpenAi::start().await;
    let r = app
        .post(
            "/api/v1/ai-providers",
            &s,
            json!({"name": "other", "type": "OPENAI_COMPATIBLE", "baseUrl": other.base_url(),
                   "apiKey": "sk-other-0000", "chatModel": "other-model", "isDefault": true}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    other.push_reply("Three.");
    ask(3, "Where are you?").await;
    let got = replies(&app, &s, &id, 3).await;
    assert_eq!(got[2].content, "Three.");
    assert_eq!(other.chat_requests().len(), 1);
    assert_eq!(fake.chat_requests().len(), 2);

    // Switched off: the next message is not answered.
    set_agent_active(&app, &s, &agent, false).await;
    let record = ask(4, "Hello?").await;
    let reply_job = record["result"]["replyJobs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.unrecorded_job_ran::<AnswerMessage>(&reply_job).await;
    let all = stored_messages(&app, &s, &id).await;
    assert_eq!(all.iter().filter(|m| is_reply(m)).count(), 3, "{all:?}");
    assert_eq!(other.chat_requests().len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_rate_limited_provider_is_retried_and_answers_once() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    default_provider(&app, &s, &fake).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    fake.rate_limit_next(1, 1);
    fake.push_reply("Thirty days, with the receipt.");
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m1", "Can I return items?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let conversation = conversation_of(&app, &s, "ana").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let got = replies(&app, &s, &id, 1).await;
    assert_eq!(got[0].content, "Thirty days, with the receipt.");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        stored_messages(&app, &s, &id)
            .await
            .iter()
            .filter(|m| is_reply(m))
            .count(),
        1
    );
    assert_eq!(fake.chat_requests().len(), 2, "one 429, then the answer");
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["status"], "ACTIVE");
    app.cleanup().await;
}

#[tokio::test]
async fn a_failing_provider_sends_the_fallback_and_hands_over() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    default_provider(&app, &s, &fake).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    let mut sock = connect(
        &app.base,
        "/",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.fail_always(500);
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m1", "Can I return items?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let conversation = conversation_of(&app, &s, "ana").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    let got = replies(&app, &s, &id, 1).await;
    assert_eq!(got[0].content, "Let me get a colleague for you.");
    assert_eq!(got[0].metadata.get_bool("fallback").ok(), Some(true));
    assert_eq!(
        fake.chat_requests().len(),
        3,
        "three tries, then the fallback"
    );
    // The handoff notice is still delivered although the bot has stopped.
    let fallback_id = got[0].id.clone();
    let delivered = app
        .eventually(Duration::from_secs(15), || async {
            stored_messages(&app, &s, &id)
                .await
                .into_iter()
                .find(|m| m.id == fallback_id)
                .filter(|m| matches!(m.status, MessageStatus::Sent | MessageStatus::Delivered))
        })
        .await;
    assert!(delivered.is_some(), "the fallback is sent to the customer");
    let waiting = async {
        loop {
            let ev = sock.next_named("conversation-updated", 15).await?;
            if ev["status"] == "WAITING" {
                return Some(ev);
            }
        }
    }
    .await;
    assert!(waiting.is_some(), "browsers learn of the handoff");
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["status"], "WAITING");
    assert_eq!(
        r.body["handoff"]["reason"], "provider_failure",
        "{}",
        r.body
    );

    // Waiting for a human: the bot does not answer the next message.
    let (_, job) = deliver(&app, &s, &ch, vec![said("ana", "m2", "Hello?")]).await;
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["result"]["replyJobs"], json!([]));
    assert_eq!(fake.chat_requests().len(), 3);
    app.cleanup().await;
}

#[tokio::test]
async fn a_reply_generated_while_staff_take_over_is_dropped() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    default_provider(&app, &s, &fake).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    fake.set_delay(Duration::from_millis(2500));
    fake.push_reply("This answer comes too late.");
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("ana", "m1", "Can I return items?")],
    )
    .await;
    let record = finished(&app, &s, &job).await;
    let reply_job = record["result"]["replyJobs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let conversation = conversation_of(&app, &s, "ana").await;
    let id = conversation["id"].as_str().unwrap_or_default().to_owned();
    // The provider is thinking; a staff member takes the conversation.
    let asked = app
        .eventually(Duration::from_secs(10), || async {
            (!fake.chat_requests().is_empty()).then_some(())
        })
        .await;
    assert!(asked.is_some(), "the provider was asked");
    let r = app
        .put(
            &format!("/api/v1/conversations/{id}/assign"),
            &s,
            json!({ "userId": s.user_id }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.unrecorded_job_ran::<AnswerMessage>(&reply_job).await;
    let all = stored_messages(&app, &s, &id).await;
    assert_eq!(all.iter().filter(|m| is_reply(m)).count(), 0, "{all:?}");
    app.cleanup().await;
}

/// A worker killed after storing a customer message but before asking for
/// its reply: the job's retry (attempt > 1) finds the message stored and asks
/// for the missing reply, once; so does a run resuming one stopped midway
/// (attempt 1 again: the queue gave the stopped run's attempt back, and
/// tells the run that it resumes). A plain replay of the event does not.
#[tokio::test]
async fn a_retry_after_a_crash_asks_for_the_missing_reply_once() {
    use aigentable_jobs::types::ProcessInbound;
    use aigentable_workers::WorkerState;
    use aigentable_workers::runner::{Handle, JobContext};

    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    // With the agent switched off, storing the message asks for no reply:
    // the state a crash right after storing leaves behind.
    let off = app
        .put(
            &format!("/api/v1/agents/{agent}"),
            &s,
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
    let mut events = Vec::new();
    for (customer, wamid, run) in [("ana", "m1", (2, false)), ("bob", "m2", (1, true))] {
        let (event, job) = deliver(
            &app,
            &s,
            &ch,
            vec![said(
                customer,
                wamid,
                "When does the shop in Rotterdam open?",
            )],
        )
        .await;
        finished(&app, &s, &job).await;
        let conversation = conversation_of(&app, &s, customer).await;
        let id = conversation["id"].as_str().unwrap_or_default().to_owned();
        events.push((event, id, run));
    }
    let on = app
        .put(
            &format!("/api/v1/agents/{agent}"),
            &s,
            json!({ "isActive": true }),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{:?}", on.body);

    let run = |event: &str, attempt: u32, resumed: bool| {
        let ctx = JobContext {
            state: WorkerState::new(app.platform.clone()).expect("worker state"),
            job_id: format!("crash-retry-{event}-{attempt}-{resumed}"),
            tenant_id: tenant(&s),
            attempt,
            resumed,
        };
        ProcessInbound {
            channel_id: ch.clone(),
            event_id: event.to_owned(),
        }
        .handle(ctx)
    };
    // The replies a while after a run: a reply it asked for has had time
    // to be written.
    let replies_after_a_while = |id: &str| {
        let (app, s, id) = (&app, &s, id.to_owned());
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stored_messages(app, s, &id)
                .await
                .into_iter()
                .filter(is_reply)
                .collect::<Vec<Message>>()
        }
    };
    for (event, id, (attempt, resumed)) in &events {
        // A replay (first attempt of a new job) is a duplicate and stays
        // silent.
        run(event, 1, false).await.expect("replay processed");
        let before = replies_after_a_while(id).await;
        assert!(before.is_empty(), "{before:?}");

        // The crashed job's retry, or its stopped run resumed, asks for
        // the reply.
        run(event, *attempt, *resumed)
            .await
            .expect("retry processed");
        let got = replies(&app, &s, id, 1).await;
        assert!(
            got[0].content.contains("opens at nine in the morning"),
            "attempt {attempt}, resumed {resumed}: {}",
            got[0].content
        );
        // Another retry finds the message answered: still one reply.
        run(event, attempt + 1, false)
            .await
            .expect("second retry processed");
        let all = replies_after_a_while(id).await;
        assert_eq!(all.len(), 1, "{all:?}");
    }
    app.cleanup().await;
}

/// A holder of a conversation's lock that is cancelled (a run stopped
/// because its lease lapsed, a timeout) gives the lock back: the next
/// reply does not wait out the lock's TTL.
#[tokio::test]
async fn a_cancelled_lock_holder_gives_the_lock_back() {
    use aigentable_platform::conversations::RedisLock;

    let app = spawn_app().await;
    let kv = &app.platform.kv;
    let key = kv.key(&["lock", "test", &aigentable_platform::ids::new_id()]);
    let ttl = Duration::from_secs(30);
    let held = RedisLock::try_acquire(kv, &key, ttl)
        .await
        .expect("redis")
        .expect("the lock is free");
    assert!(
        RedisLock::try_acquire(kv, &key, ttl)
            .await
            .expect("redis")
            .is_none(),
        "held"
    );
    let holder = async move {
        let _lock = held;
        std::future::pending::<()>().await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(20), holder).await;
    let again = RedisLock::acquire(kv, &key, ttl, Duration::from_secs(2))
        .await
        .expect("redis")
        .expect("taken again long before the lock's ttl");
    again.release().await.expect("released");
    app.cleanup().await;
}
