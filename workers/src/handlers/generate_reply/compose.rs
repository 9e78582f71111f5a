//! Retrieval, then the provider's answer or the retrieval-only one, or the
//! fallback with the reason.

use std::time::Instant;

use bson::doc;
use serde_json::Value;

use aigentable_jobs::Job;
use aigentable_jobs::types::GenerateReply;
use aigentable_jobs::types::generate_reply::TestAnswer;
use aigentable_platform::evals::Passage;
use aigentable_platform::llm::{ChatMessage, ChatRequest, LlmClient, TokenUsage};
use aigentable_platform::model::Agent;
use aigentable_vectors::Hit;

use super::deltas::{Deltas, sentences};
use super::prompt::{retrieval_only, source_json, system_prompt};
use super::provider::{LLM_CALL_TIMEOUT, Outcome, chat_with_retries, record_usage};
use crate::handlers::knowledge;
use crate::runner::{JobContext, JobError};

/// The purpose of a conversation reply: its token usage is the caller's
/// to record, on the stored message or, when none is stored, on its own.
pub(crate) const REPLY: &str = "reply";

/// Where an answer came from.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub content: String,
    pub sources: Vec<Value>,
    pub usage: Option<TokenUsage>,
    pub model: Option<String>,
    pub provider_id: Option<String>,
    pub latency_ms: u64,
    pub retrieval_only: bool,
    /// Why the fallback message was used, when it was.
    pub fallback: Option<String>,
    /// Every passage retrieved for the question, best first (also those a
    /// fallback did not use): what an evaluation scores retrieval on.
    pub passages: Vec<Passage>,
    /// The conversation left the bot while the answer was streamed: there
    /// is no answer to send.
    pub stopped: bool,
}

impl Answer {
    pub(super) fn metadata(&self) -> bson::Document {
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

    pub(super) fn test_answer(&self) -> TestAnswer {
        TestAnswer {
            reply: self.content.clone(),
            sources: self.sources.clone(),
            usage: self
                .usage
                .as_ref()
                .and_then(|u| serde_json::to_value(u).ok()),
            model: self.model.clone(),
            latency_ms: self.latency_ms,
            retrieval_only: self.retrieval_only,
            fallback: self.fallback.is_some(),
            fallback_reason: self.fallback.clone(),
        }
    }

    pub(super) fn result_json(&self) -> Value {
        serde_json::to_value(self.test_answer()).unwrap_or(Value::Null)
    }
}

/// Retrieval, then the provider's answer or the retrieval-only one, or
/// the fallback with the reason; the passages retrieved come with it.
/// With `deltas` the answer's text is streamed into them as it is written
/// (the fallback message is not: it is a notice, sent whole).
pub(crate) async fn compose(
    ctx: &JobContext,
    agent: &Agent,
    history: Vec<ChatMessage>,
    question: &str,
    purpose: &str,
    deltas: Option<&mut Deltas<'_>>,
) -> Result<Answer, JobError> {
    let started = Instant::now();
    let hits = retrieve(ctx, agent, question).await?;
    let mut answer = answer(
        ctx, agent, history, question, purpose, &hits, started, deltas,
    )
    .await?;
    answer.passages = hits
        .iter()
        .map(|h| Passage {
            document_id: h.payload.document_id.clone(),
            document_name: h.payload.document_name.clone(),
            text: h.payload.text.clone(),
        })
        .collect();
    Ok(answer)
}

/// The agent's passages for `question` above its score threshold.
async fn retrieve(ctx: &JobContext, agent: &Agent, question: &str) -> Result<Vec<Hit>, JobError> {
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
    Ok(hits)
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    ctx: &JobContext,
    agent: &Agent,
    history: Vec<ChatMessage>,
    question: &str,
    purpose: &str,
    hits: &[Hit],
    started: Instant,
    deltas: Option<&mut Deltas<'_>>,
) -> Result<Answer, JobError> {
    let platform = &ctx.state.platform;
    let provider = platform
        .live
        .provider(
            &platform.db,
            &ctx.tenant_id,
            agent.ai_provider_id.as_deref(),
        )
        .await
        .map_err(JobError::transient)?;
    let Some(provider) = provider else {
        let answer = retrieval_only(agent, hits, started);
        if let Some(deltas) = deltas.filter(|_| answer.fallback.is_none()) {
            for sentence in sentences(&answer.content) {
                deltas.push(sentence).await;
            }
            deltas.finish().await;
        }
        return Ok(answer);
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
        passages: Vec::new(),
        stopped: false,
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
    messages.push(ChatMessage::system(system_prompt(agent, hits)));
    messages.extend(history);
    messages.push(ChatMessage::user(question.to_owned()));
    let request = ChatRequest {
        model: agent.model.clone(),
        temperature: agent.temperature as f32,
        max_tokens: agent.max_tokens,
        messages,
    };
    // "Typing…" goes out while the model is asked, and before the reply
    // can be delivered.
    let typing = deltas.as_deref().and_then(Deltas::typing);
    let show_typing = async {
        if let Some(t) = typing {
            t.show(ctx).await;
        }
    };
    let ((), outcome) = tokio::join!(
        show_typing,
        chat_with_retries(ctx, &client, &request, deltas)
    );
    match outcome {
        Ok(Outcome::Stopped) => Ok(Answer {
            stopped: true,
            ..fallback("the conversation left the bot while the answer was written".to_owned())
        }),
        Ok(Outcome::Answered(output)) => {
            let content = output.content.trim().to_owned();
            // A conversation reply's tokens are counted on its stored
            // message (see `conversation::answer_locked`); those of any
            // other answer, and of one with no text, get an entry here.
            if purpose != REPLY || content.is_empty() {
                record_usage(ctx, agent, &provider, &output, purpose).await;
            }
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
                passages: Vec::new(),
                stopped: false,
            })
        }
        Err(e) => {
            tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, provider_id = %provider.id, error = %e, "ai provider failed, answering with the fallback");
            Ok(fallback(e.to_string()))
        }
    }
}

pub(super) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
