//! `test_ai_provider`: one cheap call (a 1-token chat completion) to check
//! a provider's URL, key and model. The job succeeds whenever the check
//! ran; its result says whether the provider works:
//! `{ok, latencyMs, model, error?, retryable?}`.

use std::time::Instant;

use serde_json::{Value, json};

use aigentable_jobs::types::TestAiProvider;
use aigentable_platform::llm::{ChatMessage, ChatRequest, LlmClient};
use aigentable_platform::model::AiProvider;
use aigentable_platform::usage;

use crate::runner::{Handle, JobContext, JobError};

impl Handle for TestAiProvider {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let provider = platform
            .db
            .scoped::<AiProvider>(&ctx.tenant_id)
            .find_by_id(&self.provider_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::permanent("the AI provider no longer exists"))?;
        let client = match LlmClient::from_provider(
            &provider,
            &platform.secrets,
            &platform.egress,
            platform.config.llm.timeout,
        ) {
            Ok(c) => c,
            Err(e) => {
                return Ok(
                    json!({ "ok": false, "providerId": provider.id, "error": e.to_string(), "retryable": false }),
                );
            }
        };
        let request = ChatRequest {
            model: String::new(),
            temperature: 0.0,
            max_tokens: 1,
            messages: vec![ChatMessage::user("ping")],
        };
        let started = Instant::now();
        let result = client.chat(&request).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(out) => {
                if let Err(e) = usage::record_tokens(
                    platform,
                    &ctx.tenant_id,
                    None,
                    Some(&provider.id),
                    &out.model,
                    "provider_test",
                    &out.usage,
                )
                .await
                {
                    tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, error = %e, "could not record provider test usage");
                }
                tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, provider_id = %provider.id, latency_ms, "ai provider test succeeded");
                Ok(json!({
                    "ok": true,
                    "providerId": provider.id,
                    "latencyMs": latency_ms,
                    // The provider names it: kept short.
                    "model": out.model.chars().take(100).collect::<String>(),
                }))
            }
            Err(e) => {
                tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, provider_id = %provider.id, latency_ms, error = %e, "ai provider test failed");
                Ok(json!({
                    "ok": false,
                    "providerId": provider.id,
                    "latencyMs": latency_ms,
                    "model": client.chat_model(),
                    "error": e.to_string(),
                    "retryable": e.is_retryable(),
                }))
            }
        }
    }
}
