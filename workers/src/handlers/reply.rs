//! `generate_reply`: answers a customer message (or an agent test) from
//! the agent's knowledge.
//!
//! Replies in one conversation are generated one at a time (a Redis lock
//! per conversation) and only for the latest customer message: when the
//! customer sent several messages in a row, the last one is answered with
//! the others in the history, so replies go out in order and never twice
//! (the reply's dedup key `reply:{inboundId}` is unique as well).
//!
//! With an AI provider (the agent's, else the tenant's default) the answer
//! comes from a chat completion grounded on the top passages; without one,
//! the retrieval-only responder quotes the best passages. When neither can
//! answer, the agent's fallback message goes out and the conversation is
//! handed to a human (`WAITING`).

use std::time::{Duration, Instant};

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_jobs::types::generate_reply::TestTurn;
use aigentable_jobs::types::{DeliverMessage, GenerateReply};
use aigentable_jobs::{Job, Requester};
use aigentable_platform::conversations::{self, MoveExtras, RedisLock};
use aigentable_platform::llm::{
    self, ChatMessage, ChatOutput, ChatRequest, LlmClient, LlmError, TokenUsage,
};
use aigentable_platform::model::conversation::reply_dedup_key;
use aigentable_platform::model::{
    Agent, AiProvider, Conversation, ConversationStatus, Message, MessageDirection, MessageStatus,
    SenderType,
};
use aigentable_platform::usage;
use aigentable_vectors::Hit;

use crate::handlers::knowledge;
use crate::runner::{Handle, JobContext, JobError};

/// History sent with a question, in approximate tokens (characters / 4).
pub const HISTORY_TOKEN_BUDGET: usize = 3_000;
/// Messages read back to fill the history budget.
const HISTORY_SCAN: u64 = 50;
/// Tries of one chat completion within the job.
pub const LLM_TRIES: u32 = 3;
/// One provider call.
const LLM_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest pause between tries, whatever `Retry-After` says: past it
/// the customer is better served by the fallback and a human.
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// Longer than the job's timeout, so a crashed holder blocks the
/// conversation only briefly and a live one never loses the lock.
const REPLY_LOCK_TTL: Duration = Duration::from_secs(130);
const REPLY_LOCK_WAIT: Duration = Duration::from_secs(20);
/// All tries of one answer, pauses included: with the lock wait this stays
/// inside the job's two-minute timeout, so a slow provider ends in the
/// fallback rather than in a killed job.
const PROVIDER_BUDGET: Duration = Duration::from_secs(80);
/// Characters of a passage quoted by the retrieval-only responder.
const QUOTE_CHARS: usize = 600;
/// Passages quoted by the retrieval-only responder.
const QUOTE_PASSAGES: usize = 2;

/// Where an answer came from.
#[derive(Debug, Clone)]
struct Answer {
    content: String,
    sources: Vec<Value>,
    usage: Option<TokenUsage>,
    model: Option<String>,
    provider_id: Option<String>,
    latency_ms: u64,
    retrieval_only: bool,
    /// Why the fallback message was used, when it was.
    fallback: Option<String>,
}

impl Answer {
    fn metadata(&self) -> bson::Document {
        let mut m = doc! {
            "sources": bson::to_bson(&self.sources).unwrap_or(bson::Bson::Array(Vec::new())),
            "latencyMs": i64::try_from(self.latency_ms).unwrap_or(i64::MAX),
        };
        if let Some(u) = &self.usage {
            m.insert(
                "usage",
                doc! {
                    "promptTokens": i64::from(u.prompt_tokens),
                    "completionTokens": i64::from(u.completion_tokens),
                    "totalTokens": i64::from(u.total_tokens),
                },
            );
        }
        if let Some(model) = &self.model {
            m.insert("model", model.as_str());
        }
        if let Some(p) = &self.provider_id {
            m.insert("providerId", p.as_str());
        }
        if self.retrieval_only {
            m.insert("retrievalOnly", true);
        }
        if let Some(reason) = &self.fallback {
            m.insert("fallback", true);
            m.insert("fallbackReason", reason.as_str());
        }
        m
    }

    fn result_json(&self) -> Value {
        json!({
            "reply": self.content,
            "sources": self.sources,
            "usage": self.usage,
            "model": self.model,
            "latencyMs": self.latency_ms,
            "retrievalOnly": self.retrieval_only,
            "fallback": self.fallback.is_some(),
            "fallbackReason": self.fallback,
        })
    }
}

impl Handle for GenerateReply {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        match self.conversation_id.clone() {
            Some(conversation_id) => {
                if aigentable_jobs::held::tenant_suspended(&ctx.state.platform.db, &ctx.tenant_id)
                    .await
                    .map_err(JobError::transient)?
                {
                    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation_id, "reply held: the tenant is suspended");
                    return Ok(aigentable_jobs::held::held_result());
                }
                answer_conversation(&self, &conversation_id, &ctx).await
            }
            None => answer_test(&self, &ctx).await,
        }
    }
}

/// Test mode: nothing is stored; the answer is the job's result and, when
/// the api waits for it, is pushed to its reply list.
async fn answer_test(job: &GenerateReply, ctx: &JobContext) -> Result<Value, JobError> {
    let outcome = test_answer(job, ctx).await;
    // A failure that the job will retry is not final: the api keeps waiting.
    let will_retry =
        matches!(outcome, Err(JobError::Transient(_))) && ctx.attempt < GenerateReply::MAX_ATTEMPTS;
    if let Some(key) = job.reply_key.as_ref().filter(|_| !will_retry) {
        let pushed = match &outcome {
            Ok(v) => json!({ "ok": true, "result": v }),
            Err(e) => json!({ "ok": false, "message": e.to_string() }),
        };
        let mut conn = ctx.state.platform.kv.conn();
        redis::pipe()
            .cmd("RPUSH")
            .arg(key)
            .arg(pushed.to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(key)
            .arg(60)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(JobError::transient)?;
    }
    outcome
}

async fn test_answer(job: &GenerateReply, ctx: &JobContext) -> Result<Value, JobError> {
    let input = job
        .test_input
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JobError::permanent("a test needs a message"))?;
    let agent = ctx
        .state
        .platform
        .db
        .scoped::<Agent>(&ctx.tenant_id)
        .find_by_id(&job.agent_id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::permanent("the agent no longer exists"))?;
    let history = test_history(&job.history, input);
    let answer = compose(ctx, &agent, history, input, "test").await?;
    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, retrieval_only = answer.retrieval_only, fallback = answer.fallback.is_some(), "agent test answered");
    Ok(answer.result_json())
}

/// The test's earlier turns within the history budget, newest kept first.
fn test_history(turns: &[TestTurn], question: &str) -> Vec<ChatMessage> {
    let mut budget = HISTORY_TOKEN_BUDGET.saturating_sub(approx_tokens(question));
    let mut kept = Vec::new();
    for turn in turns.iter().rev() {
        let cost = approx_tokens(&turn.content);
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(match turn.role.as_str() {
            "assistant" => ChatMessage::assistant(turn.content.clone()),
            _ => ChatMessage::user(turn.content.clone()),
        });
    }
    kept.reverse();
    kept
}

/// Tokens as the budget counts them: about four characters each.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

async fn answer_conversation(
    job: &GenerateReply,
    conversation_id: &str,
    ctx: &JobContext,
) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let Some(message_id) = job.message_id.as_deref() else {
        return Err(JobError::permanent("a reply needs the message it answers"));
    };
    let conversations_repo = db.scoped::<Conversation>(&ctx.tenant_id);
    let Some(conversation) = conversations_repo
        .find_by_id(conversation_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(json!({ "skipped": "the conversation no longer exists" }));
    };
    if !conversation.status.bot_answers() {
        return Ok(
            json!({ "skipped": format!("the conversation is {}", conversation.status.as_str()) }),
        );
    }
    let messages = db.scoped::<Message>(&ctx.tenant_id);
    let Some(question) = messages
        .find_by_id(message_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(json!({ "skipped": "the message no longer exists" }));
    };
    if let Some(existing) = existing_reply(ctx, message_id).await? {
        return ensure_delivery(ctx, &existing).await;
    }

    let lock_key = conversations::reply_lock_key(&platform.kv, conversation_id);
    let lock = RedisLock::acquire(&platform.kv, &lock_key, REPLY_LOCK_TTL, REPLY_LOCK_WAIT)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| {
            JobError::transient("another reply of this conversation is being generated")
        })?;
    let result = answer_locked(job, ctx, &conversation, &question).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(tenant_id = %ctx.tenant_id, conversation_id = %conversation_id, error = %e, "reply lock not released; it expires on its own");
    }
    result
}

async fn existing_reply(ctx: &JobContext, message_id: &str) -> Result<Option<Message>, JobError> {
    ctx.state
        .platform
        .db
        .scoped::<Message>(&ctx.tenant_id)
        .find_one(doc! { "dedupKey": reply_dedup_key(message_id) })
        .await
        .map_err(JobError::transient)
}

/// A reply stored by an earlier attempt that may not have been queued for
/// delivery before it stopped. Delivery claims a message once, so queueing
/// it again is harmless.
async fn ensure_delivery(ctx: &JobContext, reply: &Message) -> Result<Value, JobError> {
    if reply.status == MessageStatus::Queued {
        enqueue_delivery(ctx, reply).await?;
    }
    Ok(json!({ "skipped": "already answered", "replyId": reply.id }))
}

pub(crate) async fn enqueue_delivery(
    ctx: &JobContext,
    message: &Message,
) -> Result<String, JobError> {
    let job = ctx
        .state
        .jobs()
        .await
        .map_err(JobError::transient)?
        .enqueue(
            &ctx.tenant_id,
            Requester::System,
            DeliverMessage {
                message_id: message.id.clone(),
                conversation_id: message.conversation_id.clone(),
                channel_id: message.channel_id.clone(),
            },
        )
        .await
        .map_err(JobError::transient)?;
    Ok(job.id)
}

async fn answer_locked(
    job: &GenerateReply,
    ctx: &JobContext,
    conversation: &Conversation,
    question: &Message,
) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    // Decided again under the lock: the previous holder may have answered.
    if let Some(existing) = existing_reply(ctx, &question.id).await? {
        return ensure_delivery(ctx, &existing).await;
    }
    let newer = db
        .scoped::<Message>(&ctx.tenant_id)
        .find_one(doc! {
            "conversationId": &conversation.id,
            "direction": MessageDirection::Inbound.as_str(),
            "createdAt": { "$gt": bson::DateTime::from_chrono(question.created_at) },
        })
        .await
        .map_err(JobError::transient)?;
    if let Some(newer) = newer {
        // Its own job answers it, with this message in the history.
        return Ok(
            json!({ "skipped": "a newer customer message is answered instead", "newerMessageId": newer.id }),
        );
    }
    let Some(agent) = db
        .scoped::<Agent>(&ctx.tenant_id)
        .find_by_id(&job.agent_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(json!({ "skipped": "the agent no longer exists" }));
    };

    let recent = conversations::recent_messages(db, &ctx.tenant_id, &conversation.id, HISTORY_SCAN)
        .await
        .map_err(JobError::transient)?;
    let history = conversation_history(&recent, question);
    if let Some(cap) = crate::handlers::plan_cap::reached(ctx).await? {
        return crate::handlers::plan_cap::hand_over(ctx, conversation, question, &agent, cap)
            .await;
    }
    let answer = compose(ctx, &agent, history, &question.content, "reply").await?;

    // A human may have taken over while the answer was generated.
    let now = db
        .scoped::<Conversation>(&ctx.tenant_id)
        .find_by_id(&conversation.id)
        .await
        .map_err(JobError::transient)?;
    let Some(now) = now.filter(|c| c.status.bot_answers()) else {
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, "reply dropped: the conversation left the bot");
        return Ok(json!({ "dropped": "the conversation is no longer answered by the bot" }));
    };

    // The fallback hands the conversation over; it is sent as a system
    // notice so that delivery, which drops the bot's messages once a human
    // owns the conversation, still sends it.
    let sender = if answer.fallback.is_some() {
        SenderType::System
    } else {
        SenderType::Agent
    };
    let mut reply = conversations::outbound_message(
        &now,
        sender,
        Some(agent.id.clone()),
        answer.content.clone(),
    );
    reply.reply_to = Some(question.id.clone());
    reply.dedup_key = Some(reply_dedup_key(&question.id));
    reply.metadata = answer.metadata();
    if !conversations::insert_message(db, &reply)
        .await
        .map_err(JobError::transient)?
    {
        return Ok(json!({ "skipped": "already answered" }));
    }
    let updated = conversations::note_message(db, &reply)
        .await
        .map_err(JobError::transient)?;
    events::new_message(&platform.kv, &reply).await;
    let delivery_job = enqueue_delivery(ctx, &reply).await?;
    let mut conversation_now = updated.unwrap_or(now);
    if answer.fallback.is_some() {
        match conversations::move_status(
            db,
            &ctx.tenant_id,
            &conversation.id,
            ConversationStatus::Waiting,
            &MoveExtras::default(),
        )
        .await
        {
            Ok(c) => conversation_now = c,
            Err(e) => {
                tracing::warn!(tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, error = %e, "handoff after the fallback failed")
            }
        }
    }
    events::conversation_updated(&platform.kv, &conversation_now).await;
    tracing::info!(
        job_id = %ctx.job_id,
        tenant_id = %ctx.tenant_id,
        conversation_id = %conversation.id,
        reply_id = %reply.id,
        retrieval_only = answer.retrieval_only,
        fallback = answer.fallback.is_some(),
        latency_ms = answer.latency_ms,
        "reply stored"
    );
    let mut result = answer.result_json();
    if let Value::Object(map) = &mut result {
        map.insert("replyId".into(), json!(reply.id));
        map.insert("deliveryJobId".into(), json!(delivery_job));
    }
    Ok(result)
}

/// The conversation before `question`, oldest first, within the history
/// budget (newest kept first). Messages customers never saw (dropped or
/// failed replies) are left out.
fn conversation_history(recent_newest_first: &[Message], question: &Message) -> Vec<ChatMessage> {
    let mut budget = HISTORY_TOKEN_BUDGET.saturating_sub(approx_tokens(&question.content));
    let mut kept = Vec::new();
    for m in recent_newest_first {
        if m.id == question.id || m.created_at > question.created_at {
            continue;
        }
        if matches!(m.status, MessageStatus::Dropped | MessageStatus::Failed) {
            continue;
        }
        let turn = match m.sender_type {
            SenderType::Customer => ChatMessage::user(m.content.clone()),
            SenderType::Agent | SenderType::Human | SenderType::System => {
                ChatMessage::assistant(m.content.clone())
            }
        };
        let cost = approx_tokens(&m.content);
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(turn);
    }
    kept.reverse();
    kept
}

/// Retrieval, then the provider's answer or the retrieval-only one, or
/// the fallback with the reason.
async fn compose(
    ctx: &JobContext,
    agent: &Agent,
    history: Vec<ChatMessage>,
    question: &str,
    purpose: &str,
) -> Result<Answer, JobError> {
    let started = Instant::now();
    let top_k = usize::try_from(agent.retrieval.top_k)
        .unwrap_or(5)
        .clamp(1, 20);
    let retrieved = knowledge::retrieve(
        &ctx.state,
        &ctx.tenant_id,
        Some(agent.id.as_str()),
        question,
        top_k,
    )
    .await;
    let hits: Vec<Hit> = match retrieved {
        Ok(hits) => hits
            .into_iter()
            .filter(|h| f64::from(h.score) >= agent.retrieval.score_threshold)
            .collect(),
        // The job retries a failed search; on its last attempt the customer
        // still gets an answer (the model admits what it does not know, or
        // the fallback hands over) rather than silence.
        Err(e) if ctx.attempt >= GenerateReply::MAX_ATTEMPTS => {
            tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, error = %e, "knowledge search failed on the last attempt, answering without passages");
            Vec::new()
        }
        Err(e) => return Err(e),
    };

    let provider = llm::resolve_provider(
        &ctx.state.platform.db,
        &ctx.tenant_id,
        agent.ai_provider_id.as_deref(),
    )
    .await
    .map_err(JobError::transient)?;
    let Some(provider) = provider else {
        return Ok(retrieval_only(agent, &hits, started));
    };

    let sources: Vec<Value> = hits.iter().map(source_json).collect();
    let fallback = |reason: String| Answer {
        content: agent.fallback_message.clone(),
        sources: Vec::new(),
        usage: None,
        model: None,
        provider_id: Some(provider.id.clone()),
        latency_ms: elapsed_ms(started),
        retrieval_only: false,
        fallback: Some(reason),
    };
    let client = match LlmClient::from_provider(
        &provider,
        &ctx.state.platform.secrets,
        &ctx.state.platform.egress,
        LLM_CALL_TIMEOUT,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tenant_id = %ctx.tenant_id, provider_id = %provider.id, error = %e, "ai provider unusable, answering with the fallback");
            return Ok(fallback(e.to_string()));
        }
    };
    let mut messages = Vec::with_capacity(history.len() + 2);
    messages.push(ChatMessage::system(system_prompt(agent, &hits)));
    messages.extend(history);
    messages.push(ChatMessage::user(question.to_owned()));
    let request = ChatRequest {
        model: agent.model.clone(),
        temperature: agent.temperature as f32,
        max_tokens: agent.max_tokens,
        messages,
    };
    match chat_with_retries(ctx, &client, &request).await {
        Ok(output) => {
            record_usage(ctx, agent, &provider, &output, purpose).await;
            let content = output.content.trim().to_owned();
            if content.is_empty() {
                return Ok(fallback("the AI provider answered with no text".to_owned()));
            }
            Ok(Answer {
                content,
                sources,
                usage: Some(output.usage),
                model: Some(output.model),
                provider_id: Some(provider.id.clone()),
                latency_ms: elapsed_ms(started),
                retrieval_only: false,
                fallback: None,
            })
        }
        Err(e) => {
            tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, provider_id = %provider.id, error = %e, "ai provider failed, answering with the fallback");
            Ok(fallback(e.to_string()))
        }
    }
}

async fn record_usage(
    ctx: &JobContext,
    agent: &Agent,
    provider: &AiProvider,
    output: &ChatOutput,
    purpose: &str,
) {
    let model = if output.model.is_empty() {
        agent.model.as_str()
    } else {
        output.model.as_str()
    };
    if let Err(e) = usage::record_tokens(
        &ctx.state.platform.db,
        &ctx.tenant_id,
        Some(&agent.id),
        Some(&provider.id),
        model,
        purpose,
        &output.usage,
    )
    .await
    {
        // The answer is worth more than the count; the error is logged.
        tracing::error!(tenant_id = %ctx.tenant_id, agent_id = %agent.id, error = %e, "token usage not recorded");
    }
}

/// Calls the provider up to [`LLM_TRIES`] times, pausing between tries with
/// exponential backoff and jitter, or for the provider's `Retry-After`.
async fn chat_with_retries(
    ctx: &JobContext,
    client: &LlmClient,
    request: &ChatRequest,
) -> Result<ChatOutput, LlmError> {
    let deadline = Instant::now() + PROVIDER_BUDGET;
    let mut attempt = 1;
    loop {
        match client.chat(request).await {
            Ok(output) => return Ok(output),
            Err(e) if e.is_retryable() && attempt < LLM_TRIES => {
                let pause = match &e {
                    LlmError::RateLimited {
                        retry_after: Some(after),
                    } => (*after).min(MAX_PAUSE),
                    _ => backoff(attempt),
                };
                if Instant::now() + pause + LLM_CALL_TIMEOUT > deadline {
                    return Err(e);
                }
                tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, attempt, pause_ms = pause.as_millis() as u64, error = %e, "ai provider call failed, retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `base × 2^(attempt-1)` plus up to half a base of jitter, capped.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    let jitter_ms = uuid::Uuid::new_v4().as_u128() % (BACKOFF_BASE.as_millis() / 2).max(1);
    (exp + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))).min(MAX_PAUSE)
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn source_json(hit: &Hit) -> Value {
    json!({
        "documentId": hit.payload.document_id,
        "documentName": hit.payload.document_name,
        "page": hit.payload.page,
        "score": hit.score,
    })
}

/// Where a passage comes from, for prompts and quotes.
fn citation(hit: &Hit) -> String {
    let p = &hit.payload;
    match (&p.page, &p.sheet) {
        (Some(page), _) => format!("{}, page {page}", p.document_name),
        (None, Some(sheet)) => format!("{}, sheet {sheet}", p.document_name),
        (None, None) => p.document_name.clone(),
    }
}

/// The agent's personality and instructions, the rules for grounding, and
/// the numbered passages.
pub fn system_prompt_text(
    name: &str,
    personality: &str,
    instructions: &str,
    passages: &[(String, String)],
) -> String {
    let mut prompt = format!("You are {name}, a customer service assistant.");
    if !personality.trim().is_empty() {
        prompt.push_str(&format!("\nPersonality: {}", personality.trim()));
    }
    if !instructions.trim().is_empty() {
        prompt.push_str(&format!("\nInstructions: {}", instructions.trim()));
    }
    prompt.push_str(
        "\n\nAnswer only from the numbered passages of the company's knowledge base below. \
         If they do not contain the answer, say plainly that you don't know and offer to \
         connect the customer with a person from the team; never invent facts, prices or \
         policies. Keep answers short and in the customer's language.",
    );
    if passages.is_empty() {
        prompt.push_str("\n\nPassages: none matched this question.");
    } else {
        prompt.push_str("\n\nPassages:");
        for (i, (source, text)) in passages.iter().enumerate() {
            prompt.push_str(&format!("\n[{}] ({source}) {}", i + 1, text.trim()));
        }
    }
    prompt
}

fn system_prompt(agent: &Agent, hits: &[Hit]) -> String {
    let passages: Vec<(String, String)> = hits
        .iter()
        .map(|h| (citation(h), h.payload.text.clone()))
        .collect();
    system_prompt_text(
        &agent.name,
        &agent.personality,
        &agent.instructions,
        &passages,
    )
}

/// No AI provider: quote the best passages with where they come from, or
/// fall back (and hand over) when nothing matched.
fn retrieval_only(agent: &Agent, hits: &[Hit], started: Instant) -> Answer {
    if hits.is_empty() {
        return Answer {
            content: agent.fallback_message.clone(),
            sources: Vec::new(),
            usage: None,
            model: None,
            provider_id: None,
            latency_ms: elapsed_ms(started),
            retrieval_only: true,
            fallback: Some("no passage of the knowledge base matched".to_owned()),
        };
    }
    let used = &hits[..hits.len().min(QUOTE_PASSAGES)];
    let quotes: Vec<String> = used
        .iter()
        .map(|h| {
            format!(
                "From \"{}\":\n{}",
                citation(h),
                trim_passage(&h.payload.text, QUOTE_CHARS)
            )
        })
        .collect();
    Answer {
        content: format!("Here is what I found:\n\n{}", quotes.join("\n\n")),
        sources: used.iter().map(source_json).collect(),
        usage: None,
        model: None,
        provider_id: None,
        latency_ms: elapsed_ms(started),
        retrieval_only: true,
        fallback: None,
    }
}

/// At most `max` characters, cut after a sentence or else a word, with an
/// ellipsis when shortened.
pub fn trim_passage(text: &str, max: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max).collect();
    let sentence_end = cut
        .rfind(['.', '!', '?'])
        .filter(|i| *i > max / 2)
        .map(|i| i + 1);
    let end = sentence_end
        .or_else(|| cut.rfind(' ').filter(|i| *i > max / 2))
        .unwrap_or(cut.len());
    let mut out = cut[..end].trim_end().to_owned();
    if sentence_end.is_none() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_are_trimmed_at_sentences_or_words() {
        assert_eq!(trim_passage("short  text", 100), "short text");
        let long = "First sentence here. Second sentence is a bit longer than the first one.";
        assert_eq!(trim_passage(long, 36), "First sentence here.");
        // A sentence end in the first half would lose too much: cut at a word.
        assert_eq!(
            trim_passage(long, 50),
            "First sentence here. Second sentence is a bit…"
        );
        let words = "alpha beta gamma delta epsilon zeta eta theta";
        let t = trim_passage(words, 20);
        assert!(t.ends_with('…') && t.chars().count() <= 21, "{t}");
    }

    #[test]
    fn history_keeps_the_newest_turns_within_the_budget() {
        let big = "x".repeat(HISTORY_TOKEN_BUDGET * 4 / 2);
        let turns = vec![
            TestTurn {
                role: "user".into(),
                content: big.clone(),
            },
            TestTurn {
                role: "assistant".into(),
                content: big.clone(),
            },
            TestTurn {
                role: "user".into(),
                content: "latest".into(),
            },
        ];
        let kept = test_history(&turns, "question");
        assert_eq!(kept.len(), 2, "the oldest turn is over the budget");
        assert_eq!(kept[1].content, "latest");
        assert_eq!(kept[0].role, llm::ChatRole::Assistant);
    }

    #[test]
    fn prompt_numbers_passages_and_says_to_admit_ignorance() {
        let p = system_prompt_text(
            "Ava",
            "friendly",
            "be brief",
            &[("faq.txt".into(), "Refunds take 5 days.".into())],
        );
        assert!(p.contains("[1] (faq.txt) Refunds take 5 days."));
        assert!(p.contains("don't know"));
        assert!(p.contains("Personality: friendly"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= BACKOFF_BASE && backoff(1) < BACKOFF_BASE * 2);
        assert!(backoff(2) >= BACKOFF_BASE * 2);
        assert!(backoff(30) <= MAX_PAUSE);
    }
}
