//! Handoff briefs (issue 13): after every handoff the person taking over
//! gets what the customer wants, what the bot already said, the customer's
//! sentiment and the documents involved, on the conversation's `handoff`.
//! Written by the tenant's AI provider when it has one, from the
//! conversation's own words when it has none or the provider fails; the
//! assigned staff member can ask for it again.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::inbound::{channel, deliver, finished, said, stored_messages};
use aigentable_tests::socket::connect;
use aigentable_tests::{Session, TestApp, spawn_app};

use crate::replies::{agent_with_document, default_provider};

async fn conversation_id(app: &TestApp, s: &Session, user: &str) -> String {
    crate::replies::conversation_of(app, s, user).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An app, a tenant admin and a website channel answered by an agent with
/// the store-hours document; `provider` becomes the tenant's default.
async fn tenant(provider: Option<&FakeOpenAi>) -> (TestApp, Session, String) {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let agent = agent_with_document(&app, &s, json!({})).await;
    if let Some(fake) = provider {
        default_provider(&app, &s, fake).await;
    }
    let ch = channel(&app, &s, "Chat", Some(&agent)).await;
    (app, s, ch)
}

/// Waits until the conversation's handoff has a brief written after
/// `after` (any, when `None`); answers the handoff.
async fn brief(app: &TestApp, s: &Session, id: &str, after: Option<&str>) -> Value {
    app.eventually(Duration::from_secs(30), || async {
        let r = app.get(&format!("/api/v1/conversations/{id}"), s).await;
        let handoff = r.body["handoff"].clone();
        let at = handoff["briefAt"].as_str()?.to_owned();
        (after != Some(at.as_str())).then_some(handoff)
    })
    .await
    .unwrap_or_else(|| panic!("conversation {id} never got a handoff brief"))
}

/// Without a provider: the customer asks for a person. The bot says a
/// person will answer, the conversation waits for staff with the reason
/// `customer_request`, and the brief is written from the conversation:
/// the question the customer came with, their anger, the document the bot
/// quoted.
#[tokio::test]
async fn a_customer_asking_for_a_person_is_handed_over_with_an_extractive_brief() {
    let (app, s, ch) = tenant(None).await;
    let mut sock = connect(
        &app.base,
        "/",
        json!({ "token": s.token, "tenantId": s.tenant_id }),
    )
    .await
    .joined()
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said(
            "ana",
            "m1",
            "Can unused items be returned within thirty days?",
        )],
    )
    .await;
    finished(&app, &s, &job).await;
    let id = conversation_id(&app, &s, "ana").await;
    let answered = app
        .eventually(Duration::from_secs(30), || async {
            let n = stored_messages(&app, &s, &id)
                .await
                .iter()
                .filter(|m| m.reply_to.is_some())
                .count();
            (n >= 1).then_some(())
        })
        .await;
    assert!(answered.is_some(), "the bot answered the question");

    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said(
            "ana",
            "m2",
            "This is useless and terrible. I want to talk to a human now!",
        )],
    )
    .await;
    finished(&app, &s, &job).await;
    let handoff = brief(&app, &s, &id, None).await;
    assert_eq!(handoff["reason"], "customer_request", "{handoff}");
    assert_eq!(handoff["briefMethod"], "extractive", "{handoff}");
    assert_eq!(
        handoff["intent"], "Can unused items be returned within thirty days?",
        "what the customer came for, not the request for a person"
    );
    assert_eq!(handoff["sentiment"], "negative", "{handoff}");
    assert_eq!(
        handoff["sources"][0]["documentName"], "store-hours.txt",
        "{handoff}"
    );
    let summary = handoff["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("I want to talk to a human now!"),
        "{summary}"
    );
    assert!(summary.contains("The bot last answered"), "{summary}");
    let r = app.get(&format!("/api/v1/conversations/{id}"), &s).await;
    assert_eq!(r.body["status"], "WAITING");
    let note = r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(note["senderType"], "SYSTEM", "{note}");
    assert!(
        note["content"]
            .as_str()
            .is_some_and(|c| c.contains("member of our team")),
        "the customer is told a person will answer: {note}"
    );

    // Browsers get the brief with the conversation.
    let pushed = async {
        loop {
            let ev = sock.next_named("conversation-updated", 15).await?;
            if ev["handoff"]["summary"].is_string() {
                return Some(ev);
            }
        }
    }
    .await;
    assert!(pushed.is_some(), "conversation-updated carried the brief");
    let _ = sock.client.disconnect().await;
    app.cleanup().await;
}

/// With a provider: staff take a conversation from the bot, and the brief
/// is the provider's, asked with the transcript; the assigned user can
/// have it written again (another user cannot), and a conversation the bot
/// still answers has no brief to write.
#[tokio::test]
async fn staff_taking_over_get_the_providers_brief_and_can_regenerate_it() {
    let fake = FakeOpenAi::start().await;
    let (app, s, ch) = tenant(Some(&fake)).await;
    fake.push_reply("The Rotterdam shop opens at nine.");
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("bo", "m1", "When does the Rotterdam shop open?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let id = conversation_id(&app, &s, "bo").await;

    // A conversation the bot answers has no handoff to brief.
    let r = app
        .post(
            &format!("/api/v1/conversations/{id}/handoff/brief"),
            &s,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(r.message().contains("no handoff"), "{:?}", r.body);

    fake.push_brief(
        r#"{"summary": "Bo asked about opening hours; the bot said nine.", "intent": "Know when the Rotterdam shop opens", "sentiment": "neutral"}"#,
    );
    let r = app
        .put(
            &format!("/api/v1/conversations/{id}/assign"),
            &s,
            json!({ "userId": s.user_id }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let handoff = brief(&app, &s, &id, None).await;
    assert_eq!(handoff["reason"], "staff_takeover", "{handoff}");
    assert_eq!(handoff["briefMethod"], "llm", "{handoff}");
    assert_eq!(
        handoff["summary"],
        "Bo asked about opening hours; the bot said nine."
    );
    assert_eq!(handoff["intent"], "Know when the Rotterdam shop opens");
    assert_eq!(handoff["sentiment"], "neutral");
    let asked = fake.brief_requests();
    assert_eq!(asked.len(), 1, "one brief completion");
    let transcript = asked[0].body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        transcript.contains("Customer: When does the Rotterdam shop open?")
            && transcript.contains("Bot: The Rotterdam shop opens at nine."),
        "{transcript}"
    );

    // Another member of staff cannot; the assigned one can.
    let other = app.add_user(&s, "TENANT_USER").await;
    let path = format!("/api/v1/conversations/{id}/handoff/brief");
    let r = app.post(&path, &other, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    fake.push_brief(
        r#"{"summary": "Second look.", "intent": "Opening hours", "sentiment": "positive"}"#,
    );
    let r = app.post(&path, &s, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["job"]["type"], "summarize_handoff");
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let record = finished(&app, &s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    let again = brief(&app, &s, &id, handoff["briefAt"].as_str()).await;
    assert_eq!(again["summary"], "Second look.");
    assert_eq!(again["sentiment"], "positive");
    assert_eq!(
        again["reason"], "staff_takeover",
        "the handoff itself stays"
    );
    app.cleanup().await;
}

/// The provider fails: the customer gets the fallback, the conversation is
/// handed over for `provider_failure`, and the brief is still written, from
/// the conversation's words, with the provider's failure in the job's result.
#[tokio::test]
async fn a_failing_provider_still_leaves_a_brief() {
    let fake = FakeOpenAi::start().await;
    let (app, s, ch) = tenant(Some(&fake)).await;
    fake.fail_always(500);
    let (_, job) = deliver(
        &app,
        &s,
        &ch,
        vec![said("cy", "m1", "Thanks! Can I pay with a gift card?")],
    )
    .await;
    finished(&app, &s, &job).await;
    let id = conversation_id(&app, &s, "cy").await;
    let handoff = brief(&app, &s, &id, None).await;
    assert_eq!(handoff["reason"], "provider_failure", "{handoff}");
    assert_eq!(handoff["briefMethod"], "extractive", "{handoff}");
    assert_eq!(handoff["intent"], "Thanks! Can I pay with a gift card?");
    assert_eq!(handoff["sentiment"], "positive", "{handoff}");
    assert_eq!(handoff["sources"], json!([]), "the bot used no document");
    assert!(
        handoff["summary"]
            .as_str()
            .is_some_and(|t| t.contains("The bot had not answered.")),
        "the fallback is not an answer: {handoff}"
    );
    assert!(!fake.brief_requests().is_empty(), "the provider was asked");
    let jobs = aigentable_tests::inbound::jobs_of_type(&app, &s, "summarize_handoff").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(
        jobs[0]["result"]["providerError"].is_string(),
        "{:?}",
        jobs[0]
    );
    app.cleanup().await;
}
