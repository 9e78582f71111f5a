//! Bot replies past the plan's monthly allowance (messages or LLM tokens):
//! instead of answering, the conversation is handed to a human (`WAITING`)
//! with a system note, sent to the customer like the fallback so that
//! nobody is left in silence. The customer's message itself was stored
//! by the inbound path and is never dropped.

use chrono::Utc;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_platform::conversations::{self, MoveExtras};
use aigentable_platform::model::conversation::{Handoff, HandoffReason, reply_dedup_key};
use aigentable_platform::model::{Agent, Conversation, ConversationStatus, Message, SenderType};
use aigentable_platform::plan_caps::{self, CapReached};

use crate::runner::{JobContext, JobError};

/// What the customer reads.
pub const NOTE: &str =
    "Thanks for your message. A member of our team will get back to you shortly.";

pub async fn reached(ctx: &JobContext) -> Result<Option<CapReached>, JobError> {
    let platform = &ctx.state.platform;
    plan_caps::bot_cap_reached(&platform.db, &platform.config, &ctx.tenant_id, Utc::now())
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
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let mut note = conversations::outbound_message(
        conversation,
        SenderType::System,
        Some(agent.id.clone()),
        NOTE.to_owned(),
    );
    note.reply_to = Some(question.id.clone());
    note.dedup_key = Some(reply_dedup_key(&question.id));
    note.metadata = bson::doc! {
        "handoff": "plan-limit",
        "planLimit": cap.limit,
        "planLimitValue": i64::try_from(cap.value).unwrap_or(i64::MAX),
        "planLimitUsage": i64::try_from(cap.usage).unwrap_or(i64::MAX),
    };
    if !conversations::insert_message(db, &note)
        .await
        .map_err(JobError::transient)?
    {
        return Ok(json!({ "skipped": "already answered" }));
    }
    conversations::note_message(db, &note)
        .await
        .map_err(JobError::transient)?;
    events::new_message(&platform.kv, &note).await;
    let delivery_job = crate::handlers::generate_reply::enqueue_delivery(ctx, &note).await?;
    match conversations::move_status(
        db,
        &ctx.tenant_id,
        &conversation.id,
        ConversationStatus::Waiting,
        &MoveExtras {
            handoff: Some(Handoff {
                reason: HandoffReason::MonthlyCap,
                note: format!(
                    "The plan's monthly {} allowance ({}) is used up: the bot stopped answering.",
                    cap.limit, cap.value
                ),
                message_id: Some(question.id.clone()),
                created_at: Utc::now(),
                brief: None,
            }),
            ..MoveExtras::default()
        },
    )
    .await
    {
        Ok(c) => {
            events::conversation_updated(&platform.kv, &c).await;
            crate::handlers::summarize_handoff::queue_brief(ctx, &c).await;
        }
        Err(e) => {
            tracing::warn!(tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, error = %e, "handoff at the plan limit failed")
        }
    }
    tracing::info!(
        job_id = %ctx.job_id,
        tenant_id = %ctx.tenant_id,
        conversation_id = %conversation.id,
        limit = cap.limit,
        value = cap.value,
        usage = cap.usage,
        "bot reply replaced by a handoff: plan limit reached"
    );
    Ok(json!({
        "handedOver": "plan limit reached",
        "limit": cap.limit,
        "value": cap.value,
        "usage": cap.usage,
        "noteId": note.id,
        "deliveryJobId": delivery_job,
    }))
}
