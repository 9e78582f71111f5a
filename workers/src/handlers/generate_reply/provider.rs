//! Provider calls with retries, and the tokens they cost.

use std::time::{Duration, Instant};

use futures::StreamExt;

use aigentable_platform::llm::{ChatOutput, ChatRequest, LlmClient, LlmError, TokenUsage};
use aigentable_platform::model::{Agent, AiProvider};
use aigentable_platform::usage;

use super::compose::Answer;
use super::deltas::{Deltas, Flow};
use super::prompt::approx_tokens;
use crate::runner::JobContext;

/// Tries of one chat completion within the job.
pub const LLM_TRIES: u32 = 3;
/// One provider call.
pub(super) const LLM_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest pause between tries, whatever `Retry-After` says: past it
/// the customer is better served by the fallback and a human.
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// All tries of one answer, pauses included: with the lock wait this stays
/// inside the job's two-minute timeout, so a slow provider ends in the
/// fallback rather than in a killed job.
const PROVIDER_BUDGET: Duration = Duration::from_secs(80);

pub(super) async fn record_usage(
    ctx: &JobContext,
    agent: &Agent,
    provider: &AiProvider,
    output: &ChatOutput,
    purpose: &str,
) {
    record(
        ctx,
        agent,
        Some(&provider.id),
        &output.model,
        purpose,
        &output.usage,
    )
    .await;
}

/// Records the tokens of a conversation reply that was not stored (a
/// person took over meanwhile, or an earlier attempt stored it first): no
/// message carries them, yet the provider was paid for them.
pub(super) async fn record_unstored_reply_usage(ctx: &JobContext, agent: &Agent, answer: &Answer) {
    if let Some(tokens) = &answer.usage {
        let model = answer.model.as_deref().unwrap_or_default();
        let provider = answer.provider_id.as_deref();
        record(ctx, agent, provider, model, super::compose::REPLY, tokens).await;
    }
}

/// One `token_usage` entry; `model` is the agent's when the provider named
/// none.
async fn record(
    ctx: &JobContext,
    agent: &Agent,
    provider_id: Option<&str>,
    model: &str,
    purpose: &str,
    tokens: &TokenUsage,
) {
    let model = if model.is_empty() {
        agent.model.as_str()
    } else {
        model
    };
    if let Err(e) = usage::record_tokens(
        &ctx.state.platform,
        &ctx.tenant_id,
        Some(&agent.id),
        provider_id,
        model,
        purpose,
        tokens,
    )
    .await
    {
        // The answer is worth more than the count; the error is logged.
        tracing::error!(tenant_id = %ctx.tenant_id, agent_id = %agent.id, error = %e, "token usage not recorded");
    }
}

/// What a call to the provider ended with.
pub(super) enum Outcome {
    Answered(ChatOutput),
    /// The conversation left the bot while the answer was streamed.
    Stopped,
}

/// Calls the provider up to [`LLM_TRIES`] times, pausing between tries with
/// exponential backoff and jitter, or for the provider's `Retry-After`.
///
/// With `deltas` the answer is streamed into them. A stream that breaks
/// after text was shown is answered by a complete (not streamed) call, so
/// the text is not shown twice; that call gets a try even when the broken
/// stream was the last one.
pub(super) async fn chat_with_retries(
    ctx: &JobContext,
    client: &LlmClient,
    request: &ChatRequest,
    mut deltas: Option<&mut Deltas<'_>>,
) -> Result<Outcome, LlmError> {
    let deadline = Instant::now() + PROVIDER_BUDGET;
    let mut attempt = 1;
    loop {
        let result = match deltas.as_deref_mut() {
            Some(d) if !d.started() => stream_once(client, request, d).await,
            _ => client.chat(request).await.map(Outcome::Answered),
        };
        match result {
            Ok(outcome) => return Ok(outcome),
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
            Err(e)
                if e.is_retryable()
                    && deltas.as_deref().is_some_and(Deltas::started)
                    && Instant::now() + LLM_CALL_TIMEOUT <= deadline =>
            {
                tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, error = %e, "the streamed answer broke off, asking for it whole");
                return client.chat(request).await.map(Outcome::Answered);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One streamed call: the pieces go to `deltas` as they come, coalesced.
/// A takeover is looked for while the answer streams; one before the
/// first piece is caught when the reply is about to be stored.
async fn stream_once(
    client: &LlmClient,
    request: &ChatRequest,
    deltas: &mut Deltas<'_>,
) -> Result<Outcome, LlmError> {
    let mut stream = client.chat_stream(request).await?;
    let mut content = String::new();
    let mut usage = None;
    let mut model = String::new();
    loop {
        let due = deltas.due_at();
        let flow = tokio::select! {
            piece = stream.next() => match piece {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(piece)) => {
                    if piece.usage.is_some() {
                        usage = piece.usage;
                    }
                    if let Some(m) = piece.model {
                        model = m;
                    }
                    content.push_str(&piece.delta);
                    deltas.push(&piece.delta).await
                }
            },
            () = sleep_until_due(due) => deltas.tick().await,
        };
        if flow == Flow::Stop {
            // Dropping the stream closes the connection: the provider stops.
            return Ok(Outcome::Stopped);
        }
    }
    deltas.finish().await;
    let usage = usage.unwrap_or_else(|| estimated_usage(request, &content));
    Ok(Outcome::Answered(ChatOutput {
        content,
        usage,
        model,
    }))
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A provider that streams without reporting usage (Azure's older API
/// versions) is counted by the same estimate as the history budget.
fn estimated_usage(request: &ChatRequest, content: &str) -> TokenUsage {
    let prompt: usize = request
        .messages
        .iter()
        .map(|m| approx_tokens(&m.content))
        .sum();
    let completion = approx_tokens(content);
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    TokenUsage {
        prompt_tokens: n(prompt),
        completion_tokens: n(completion),
        total_tokens: n(prompt + completion),
    }
}

/// `base × 2^(attempt-1)` plus up to half a base of jitter, capped.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    let jitter_ms = uuid::Uuid::new_v4().as_u128() % (BACKOFF_BASE.as_millis() / 2).max(1);
    (exp + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= BACKOFF_BASE && backoff(1) < BACKOFF_BASE * 2);
        assert!(backoff(2) >= BACKOFF_BASE * 2);
        assert!(backoff(30) <= MAX_PAUSE);
    }
}
