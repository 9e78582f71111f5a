//! Bot replies past the plan's monthly allowance (messages or LLM tokens):
//! instead of answering, the conversation is handed to a human (`WAITING`)
//! with a system note, sent to the customer like the fallback so that
//! nobody is left in silence. The customer's message itself was stored
//! by the inbound path and is never dropped.

use chrono::Utc;
use serde_json::{Value, json};

use aigentable_platform::model::conversation::{Handoff, HandoffReason};
use aigentable_platform::model::{Agent, Conversation, Message, Tenant};
use aigentable_platform::plan_caps::{self, CapReached};

use crate::runner::{JobContext, JobError};

/// What the customer reads.
pub const NOTE: &str =
    "Thanks for your message. A member of our team will get back to you shortly.";

pub async fn reached(ctx: &JobContext, tenant: &Tenant) -> Result<Option<CapReached>, JobError> {
    let platform = &ctx.state.platform;
    plan_caps::bot_cap_reached(
        &platform.db,
        &platform.kv,
        &platform.config,
        tenant,
        Utc::now(),
    )
    .await
    .map_err(JobError::transient)
}

pub async fn hand_over(
    ctx: &JobContext,
    conversation: &Conversation,
    question: &Message,
    agent: &Agent,
    cap: CapReached,
) -> Result<Value, JobError> {
    let handoff = Handoff::new(
        HandoffReason::MonthlyCap,
        format!(
            "The plan's monthly {} allowance ({}) is used up: the bot stopped answering.",
            cap.limit, cap.value
        ),
        Some(question.id.clone()),
    );
    let metadata = bson::doc! {
        "handoff": "plan-limit",
        "planLimit": cap.limit,
        "planLimitValue": i64::try_from(cap.value).unwrap_or(i64::MAX),
        "planLimitUsage": i64::try_from(cap.usage).unwrap_or(i64::MAX),
    };
    let mut result = crate::handlers::handoff::instead_of_a_reply(
        ctx,
        conversation,
        question,
        agent,
        NOTE,
        metadata,
        handoff,
    )
    .await?;
    if result.get("skipped").is_none() {
        tracing::info!(
            job_id = %ctx.job_id,
            tenant_id = %ctx.tenant_id,
            conversation_id = %conversation.id,
            limit = cap.limit,
            value = cap.value,
            usage = cap.usage,
            "bot reply replaced by a handoff: plan limit reached"
        );
        result["handedOver"] = json!("plan limit reached");
        result["limit"] = json!(cap.limit);
        result["value"] = json!(cap.value);
        result["usage"] = json!(cap.usage);
    }
    Ok(result)
}
