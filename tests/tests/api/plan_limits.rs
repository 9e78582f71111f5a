//! Plan limits from the plans billing shows: past a limit, creating is a
//! 402 naming the limit, its value and the usage; inbound customer
//! messages are never refused.

use std::time::Duration;

use aigentable_platform::model::SenderType;
use aigentable_tests::{Reply, TestApp, inbound, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A free plan with room for one of everything (and two users).
fn tiny_plans() -> String {
    plans_with_messages(1)
}

fn plans_with_messages(messages_per_month: u64) -> String {
    plans_with(messages_per_month, 1000)
}

fn plans_with(messages_per_month: u64, llm_tokens_per_month: u64) -> String {
    json!([{
        "id": "free", "name": "Free", "priceCents": 0, "currency": "USD",
        "limits": {
            "users": 2, "agents": 1, "channels": 1, "documents": 1,
            "storageBytes": 1000, "conversationsPerMonth": 10,
            "messagesPerMonth": messages_per_month, "llmTokensPerMonth": llm_tokens_per_month,
        },
    }])
    .to_string()
}

/// The tenant's newest conversation.
async fn latest_conversation(app: &TestApp, admin: &aigentable_tests::Session) -> String {
    let conversations = app.get("/api/v1/conversations", admin).await;
    conversations.body["conversations"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no conversation: {:?}", conversations.body))
        .to_owned()
}

/// Waits until the conversation is handed to staff; its body.
async fn handed_over(
    app: &TestApp,
    admin: &aigentable_tests::Session,
    conversation: &str,
) -> Option<Value> {
    app.eventually(Duration::from_secs(30), || async {
        let c = app
            .get(&format!("/api/v1/conversations/{conversation}"), admin)
            .await;
        (c.body["status"] == "WAITING").then_some(c.body)
    })
    .await
}

/// Waits until a monthly allowance hands the conversation to staff. `why`
/// says which message should have reached it.
async fn handed_over_at_cap(
    app: &TestApp,
    admin: &aigentable_tests::Session,
    conversation: &str,
    why: &str,
) {
    let waiting = handed_over(app, admin, conversation).await.expect(why);
    assert_eq!(waiting["handoff"]["reason"], "monthly_cap", "{waiting}");
}

/// Customer `cust-1` writes `text` (message `id`) on `channel`; returns
/// once the inbound job finished.
async fn customer_says(
    app: &TestApp,
    admin: &aigentable_tests::Session,
    channel: &str,
    id: &str,
    text: &str,
) {
    let (_, job) =
        inbound::deliver(app, admin, channel, vec![inbound::said("cust-1", id, text)]).await;
    inbound::finished(app, admin, &job).await;
}

fn assert_limit(r: &Reply, limit: &str, value: u64, usage: u64) {
    assert_eq!(
        r.status,
        StatusCode::PAYMENT_REQUIRED,
        "{limit}: {:?}",
        r.body
    );
    assert_eq!(r.body["code"], "PLAN_LIMIT_EXCEEDED", "{:?}", r.body);
    assert_eq!(
        r.body["details"],
        json!({ "limit": limit, "value": value, "usage": usage, "reason": "plan_limit" }),
        "{:?}",
        r.body
    );
    assert!(r.message().contains(limit), "{:?}", r.body);
}

async fn spawn() -> TestApp {
    spawn_app_with(&[("PLANS_JSON", &tiny_plans())]).await
}

#[tokio::test]
async fn agents_users_and_channels_stop_at_the_plan() {
    let app = spawn().await;
    let admin = app.register("Tiny").await;
    let r = app
        .post("/api/v1/agents", &admin, json!({ "name": "One" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .post("/api/v1/agents", &admin, json!({ "name": "Two" }))
        .await;
    assert_limit(&r, "agents", 1, 1);

    app.add_user(&admin, "TENANT_USER").await;
    let r = app
        .post(
            "/api/v1/users",
            &admin,
            json!({ "email": "third@example.com", "password": "anotherPass456", "firstName": "T", "lastName": "H" }),
        )
        .await;
    assert_limit(&r, "users", 2, 2);

    let site = |name: &str| -> Value {
        json!({ "type": "WEBSITE", "name": name, "config": { "allowedOrigins": ["https://shop.example"] } })
    };
    let r = app.post("/api/v1/channels", &admin, site("One")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app.post("/api/v1/channels", &admin, site("Two")).await;
    assert_limit(&r, "channels", 1, 1);

    // Billing shows the same plan.
    let billing = app
        .get(
            &format!("/api/v1/tenants/{}/billing", admin.tenant_id),
            &admin,
        )
        .await;
    assert_eq!(billing.body["limits"]["agents"], 1, "{:?}", billing.body);
    assert_eq!(billing.body["limits"]["channels"], 1, "{:?}", billing.body);
    assert_eq!(billing.body["usage"]["channels"], 1, "{:?}", billing.body);
    app.cleanup().await;
}

#[tokio::test]
async fn documents_stop_at_their_count_and_storage() {
    let app = spawn().await;
    let admin = app.register("Tiny docs").await;
    let big = "x".repeat(2000);
    let r = app
        .upload(&admin, vec![("big.txt", big.into_bytes())], None)
        .await;
    assert_limit(&r, "storageBytes", 1000, 0);
    let listed = app.get("/api/v1/documents", &admin).await;
    assert_eq!(
        listed.body["documents"],
        json!([]),
        "nothing stored: {:?}",
        listed.body
    );

    app.upload_text(&admin, "faq.txt", "Refunds take five days.", None)
        .await;
    let r = app
        .upload(&admin, vec![("more.txt", b"More.".to_vec())], None)
        .await;
    assert_limit(&r, "documents", 1, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn over_the_monthly_cap_customers_are_kept_and_handed_to_a_human() {
    let app = spawn().await;
    let admin = app.register("Tiny messages").await;
    let agent = app
        .post("/api/v1/agents", &admin, json!({ "name": "Bot" }))
        .await;
    assert_eq!(agent.status, StatusCode::CREATED, "{:?}", agent.body);
    let agent_id = agent.body["id"].as_str().unwrap_or_default().to_owned();
    let channel = inbound::channel(&app, &admin, "Site", Some(&agent_id)).await;
    let (_, job) = inbound::deliver(
        &app,
        &admin,
        &channel,
        vec![
            inbound::said("cust-1", "m-1", "hello"),
            inbound::said("cust-1", "m-2", "anyone there?"),
        ],
    )
    .await;
    inbound::finished(&app, &admin, &job).await;
    let conversation = latest_conversation(&app, &admin).await;

    // The bot does not answer: a human gets the conversation, with a note.
    handed_over_at_cap(
        &app,
        &admin,
        &conversation,
        "the conversation was handed over",
    )
    .await;
    let stored = inbound::stored_messages(&app, &admin, &conversation).await;
    let customer = stored
        .iter()
        .filter(|m| m.sender_type == SenderType::Customer)
        .count();
    assert_eq!(customer, 2, "both customer messages kept over a cap of 1");
    assert!(
        !stored.iter().any(|m| m.sender_type == SenderType::Agent),
        "no bot reply past the cap"
    );
    let note = stored
        .iter()
        .find(|m| m.sender_type == SenderType::System)
        .expect("a system note");
    assert_eq!(note.metadata.get_str("planLimit"), Ok("messages"));
    assert_eq!(note.metadata.get_str("handoff"), Ok("plan-limit"));

    // Staff replies past the cap are refused with the figures.
    let r = app
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &admin,
            json!({ "content": "Hello!" }),
        )
        .await;
    assert_limit(&r, "messages", 1, 3);
    app.cleanup().await;
}

/// The monthly message count a reply checks is kept as the month goes: a
/// first customer message and the bot's answer count, so the second one
/// reaches a cap of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_count_follows_each_stored_message() {
    let plans = plans_with_messages(3);
    let app = spawn_app_with(&[("PLANS_JSON", &plans)]).await;
    let admin = app.register("Counted messages").await;
    let agent_id = crate::replies::agent_with_document(&app, &admin, json!({})).await;
    let channel = inbound::channel(&app, &admin, "Site", Some(&agent_id)).await;
    let senders = |conversation: String| {
        let (app, admin) = (&app, &admin);
        async move {
            inbound::stored_messages(app, admin, &conversation)
                .await
                .into_iter()
                .map(|m| m.sender_type)
                .collect::<Vec<_>>()
        }
    };

    customer_says(
        &app,
        &admin,
        &channel,
        "m-1",
        "what are your opening hours?",
    )
    .await;
    let conversation = latest_conversation(&app, &admin).await;
    let answered = app
        .eventually(Duration::from_secs(30), || async {
            let s = senders(conversation.clone()).await;
            s.contains(&SenderType::Agent).then_some(s)
        })
        .await;
    assert!(
        answered.is_some(),
        "the first message is answered (2 of 3): {:?} {:?}",
        senders(conversation.clone()).await,
        app.get(&format!("/api/v1/conversations/{conversation}"), &admin)
            .await
            .body
    );

    customer_says(&app, &admin, &channel, "m-2", "can I return items?").await;
    handed_over_at_cap(
        &app,
        &admin,
        &conversation,
        "the third message of the month reached the cap",
    )
    .await;
    let s = senders(conversation.clone()).await;
    assert_eq!(
        s.iter().filter(|t| **t == SenderType::Agent).count(),
        1,
        "no second bot reply: {s:?}"
    );
    app.cleanup().await;
}

/// A bot reply's tokens count toward the month's allowance with the reply
/// itself (one counter update for both): with an allowance of one token,
/// the first answer spends it and the next message goes to a human.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_token_count_follows_each_bot_reply() {
    let plans = plans_with(100, 1);
    let app = spawn_app_with(&[("PLANS_JSON", &plans)]).await;
    let admin = app.register("Counted tokens").await;
    // The document first, with no provider: its indexing spends no token.
    let agent_id = crate::replies::agent_with_document(&app, &admin, json!({})).await;
    let fake = aigentable_tests::fake_openai::FakeOpenAi::start().await;
    crate::replies::default_provider(&app, &admin, &fake).await;
    let channel = inbound::channel(&app, &admin, "Site", Some(&agent_id)).await;

    customer_says(&app, &admin, &channel, "m-1", "when do you open?").await;
    let conversation = latest_conversation(&app, &admin).await;
    let billed = app
        .eventually(Duration::from_secs(30), || async {
            inbound::stored_messages(&app, &admin, &conversation)
                .await
                .into_iter()
                .find(|m| m.sender_type == SenderType::Agent)
        })
        .await
        .expect("the first message is answered while no token is spent")
        .billed_tokens;
    assert!(
        billed.is_some_and(|b| b > 0),
        "the reply billed its tokens: {billed:?}"
    );
    assert_eq!(fake.chat_requests().len(), 1);

    customer_says(&app, &admin, &channel, "m-2", "and on Sundays?").await;
    handed_over_at_cap(
        &app,
        &admin,
        &conversation,
        "the reply's tokens used up the allowance",
    )
    .await;
    let stored = inbound::stored_messages(&app, &admin, &conversation).await;
    let note = &stored
        .iter()
        .find(|m| m.sender_type == SenderType::System)
        .expect("a system note")
        .metadata;
    assert_eq!(note.get_str("planLimit"), Ok("llmTokens"), "{note}");
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.sender_type == SenderType::Agent)
            .count(),
        1,
        "no second bot reply"
    );
    assert_eq!(fake.chat_requests().len(), 1, "no second model call");
    app.cleanup().await;
}
