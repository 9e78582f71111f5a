//! Provider calls with retries, and the tokens they cost.

use std::time::{Duration, Instant};

use aigentable_platform::llm::{ChatOutput, ChatRequest, LlmClient, LlmError};
use aigentable_platform::model::{Agent, AiProvider};
use aigentable_platform::usage;

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
pub(super) async fn chat_with_retries(
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
