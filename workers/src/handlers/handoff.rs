//! Handing a conversation to staff from a job: the move to `WAITING` with
//! its reason, the `conversation-updated` event and the brief's job, and,
//! when the bot stops answering in place of a reply, the notice the
//! customer reads instead.

use bson::Document;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_platform::conversations::{self, MoveExtras};
use aigentable_platform::model::conversation::{Handoff, reply_dedup_key};
use aigentable_platform::model::{Agent, Conversation, ConversationStatus, Message, SenderType};

use crate::handlers::generate_reply::enqueue_delivery;
use crate::runner::{JobContext, JobError};

/// Moves the conversation to staff (`WAITING`) with `handoff`, then queues
/// its brief. The conversation as it is now, or `None` when the move
/// failed (logged: the reply or notice that goes with it is stored
/// already, and staff still see the conversation).
pub async fn to_staff(
    ctx: &JobContext,
    conversation_id: &str,
    handoff: Handoff,
) -> Option<Conversation> {
    let platform = &ctx.state.platform;
    let moved = conversations::move_status(
        &platform.db,
        &ctx.tenant_id,
        conversation_id,
        ConversationStatus::Waiting,
        &MoveExtras {
            handoff: Some(handoff),
            ..MoveExtras::default()
        },
    )
    .await;
    match moved {
        Ok(c) => {
            crate::handlers::summarize_handoff::queue_brief(ctx, &c).await;
            Some(c)
        }
        Err(e) => {
            tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id, error = %e, "handoff to staff failed");
            None
        }
    }
}

/// The bot stops answering: `text` goes to the customer as a `SYSTEM`
/// notice in reply to `question` (so that delivery, which drops the bot's
/// messages once staff own the conversation, still sends it), then the
/// conversation goes to staff with `handoff`. The job's result, or
/// `skipped` when the question was answered already.
pub async fn instead_of_a_reply(
    ctx: &JobContext,
    conversation: &Conversation,
    question: &Message,
    agent: &Agent,
    text: &str,
    metadata: Document,
    handoff: Handoff,
) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let mut note = conversations::outbound_message(
        conversation,
        SenderType::System,
        Some(agent.id.clone()),
        text.to_owned(),
    );
    note.reply_to = Some(question.id.clone());
    note.dedup_key = Some(reply_dedup_key(&question.id));
    note.metadata = metadata;
    if !conversations::insert_message(db, &ctx.state.platform.kv, &note)
        .await
        .map_err(JobError::transient)?
    {
        return Ok(json!({ "skipped": "already answered" }));
    }
    conversations::note_message(db, &note)
        .await
        .map_err(JobError::transient)?;
    events::new_message(&platform.kv, &note).await;
    let delivery_job = enqueue_delivery(ctx, &note).await?;
    if let Some(c) = to_staff(ctx, &conversation.id, handoff).await {
        events::conversation_updated(&platform.kv, &c).await;
    }
    Ok(json!({ "noteId": note.id, "deliveryJobId": delivery_job }))
}
