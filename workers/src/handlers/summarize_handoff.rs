//! `summarize_handoff`: the brief of a conversation's handoff, written by
//! the tenant's AI provider when it has one (the agent's, else the default)
//! and from the conversation's own words otherwise or when the provider
//! fails; stored on the handoff and pushed with `conversation-updated`.

use std::time::Duration;

use serde_json::{Value, json};

use aigentable_jobs::types::SummarizeHandoff;
use aigentable_jobs::{Requester, events};
use aigentable_platform::handoff_brief::{self, RECENT_MESSAGES, Transcript};
use aigentable_platform::llm::{self, ChatRequest, LlmClient};
use aigentable_platform::model::conversation::{Handoff, HandoffBrief};
use aigentable_platform::model::{Agent, Conversation};
use aigentable_platform::{conversations, usage};

use crate::runner::{Handle, JobContext, JobError};

/// One provider call; past it the extractive brief is written instead.
const LLM_TIMEOUT: Duration = Duration::from_secs(30);
const BRIEF_MAX_TOKENS: u32 = 400;

impl Handle for SummarizeHandoff {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let db = &platform.db;
        let Some(conversation) = db
            .scoped::<Conversation>(&ctx.tenant_id)
            .find_by_id(&self.conversation_id)
            .await
            .map_err(JobError::transient)?
        else {
            return Ok(json!({ "skipped": "the conversation no longer exists" }));
        };
        // Stored dates keep milliseconds.
        let Some(handoff) = conversation
            .handoff
            .as_ref()
            .filter(|h| h.created_at.timestamp_millis() == self.handoff_at.timestamp_millis())
        else {
            return Ok(json!({ "skipped": "the handoff was replaced or cleared" }));
        };
        let recent =
            conversations::recent_messages(db, &ctx.tenant_id, &conversation.id, RECENT_MESSAGES)
                .await
                .map_err(JobError::transient)?;
        let transcript = Transcript::new(recent);
        let (brief, provider_error) = match from_provider(&ctx, &conversation, &transcript, handoff)
            .await
        {
            Ok(Some(written)) => (transcript.written(written), None),
            Ok(None) => (transcript.extractive(handoff), None),
            Err(e) => {
                tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, error = %e, "handoff brief: provider failed, written from the conversation instead");
                (transcript.extractive(handoff), Some(e))
            }
        };
        let Some(updated) = handoff_brief::store(
            db,
            &ctx.tenant_id,
            &conversation.id,
            handoff.created_at,
            &brief,
        )
        .await
        .map_err(JobError::transient)?
        else {
            return Ok(json!({ "skipped": "the handoff was replaced or cleared" }));
        };
        events::conversation_updated(&platform.kv, &updated).await;
        Ok(result(&brief, provider_error))
    }
}

fn result(brief: &HandoffBrief, provider_error: Option<String>) -> Value {
    json!({
        "method": brief.method.as_str(),
        "sentiment": brief.sentiment.as_str(),
        "sources": brief.sources.len(),
        "providerError": provider_error,
    })
}

/// The provider's brief: `Ok(None)` without a provider, `Err` with the
/// reason when it failed or answered something unusable.
async fn from_provider(
    ctx: &JobContext,
    conversation: &Conversation,
    transcript: &Transcript,
    handoff: &Handoff,
) -> Result<Option<handoff_brief::LlmBrief>, String> {
    let platform = &ctx.state.platform;
    let agent = match &conversation.agent_id {
        Some(id) => platform
            .db
            .scoped::<Agent>(&ctx.tenant_id)
            .find_by_id(id)
            .await
            .map_err(|e| e.to_string())?,
        None => None,
    };
    let Some(provider) = llm::resolve_provider(
        &platform.db,
        &ctx.tenant_id,
        agent.as_ref().and_then(|a| a.ai_provider_id.as_deref()),
    )
    .await
    .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let client =
        LlmClient::from_provider(&provider, &platform.secrets, &platform.egress, LLM_TIMEOUT)
            .map_err(|e| e.to_string())?;
    let request = ChatRequest {
        // The agent's model when it has one, else the provider's.
        model: agent.as_ref().map(|a| a.model.clone()).unwrap_or_default(),
        temperature: 0.2,
        max_tokens: BRIEF_MAX_TOKENS,
        messages: transcript.llm_messages(handoff),
    };
    let output = client.chat(&request).await.map_err(|e| e.to_string())?;
    let model = if output.model.is_empty() {
        request.model.as_str()
    } else {
        output.model.as_str()
    };
    if let Err(e) = usage::record_tokens(
        platform,
        &ctx.tenant_id,
        conversation.agent_id.as_deref(),
        Some(&provider.id),
        model,
        "handoff_brief",
        &output.usage,
    )
    .await
    {
        tracing::error!(tenant_id = %ctx.tenant_id, error = %e, "token usage not recorded");
    }
    handoff_brief::parse_llm(&output.content)
        .map(Some)
        .ok_or_else(|| "the AI provider's brief was not the JSON asked for".to_owned())
}

/// Queues the brief of the handoff the platform just made. The handoff is
/// stored already: a queue that cannot take the job costs the brief (staff
/// can ask for it again), not the handoff.
pub(crate) async fn queue_brief(ctx: &JobContext, conversation: &Conversation) {
    let Some(job) = SummarizeHandoff::for_conversation(conversation) else {
        return;
    };
    let queued = match ctx.state.jobs().await {
        Ok(jobs) => jobs
            .enqueue(&ctx.tenant_id, Requester::System, job)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = queued {
        tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, error = %e, "handoff brief not queued");
    }
}
