//! `deliver_message`: sends one stored outbound message through its
//! channel, at most once, in conversation order.
//!
//! The message itself is the lock: a run claims it `QUEUED → SENDING` with
//! one conditional update, so two jobs for the same message (a duplicate
//! enqueue, a retry racing a slow attempt) cannot both send it. After the
//! provider call the outcome is stored with a filter on `SENDING`.
//!
//! A message found `SENDING` by a later attempt means an earlier attempt
//! was interrupted (worker crash or job timeout) somewhere around the
//! provider call. Whether the provider got it is unknown, and none of the
//! providers takes an idempotency key, so it is **not** sent again: once the
//! attempt is surely over (older than the job timeout) it is marked
//! `FAILED` with an explanation, and staff can resend. A duplicate customer
//! message is worse than a visible failure.

use bson::doc;
use chrono::Utc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::events;
use aigentable_jobs::types::DeliverMessage;
use aigentable_platform::channels::client::{
    ProviderClient, ProviderError, Target, max_text_len, split_text,
};
use aigentable_platform::model::{
    Channel, ChannelType, Conversation, Message, MessageDirection, MessageStatus, SenderType,
};

use crate::runner::{Handle, JobContext, JobError};

/// The provider client over the platform's egress guard (its connection
/// pool is shared by the whole process).
pub(crate) fn provider_client(ctx: &JobContext) -> ProviderClient {
    ProviderClient::new(&ctx.state.platform.egress)
}

/// A `SENDING` message older than this was left by an interrupted attempt.
fn stale_after() -> chrono::Duration {
    chrono::Duration::from_std(DeliverMessage::TIMEOUT).unwrap_or(chrono::Duration::seconds(60))
        + chrono::Duration::seconds(30)
}

fn result(m: &Message) -> Value {
    json!({
        "messageId": m.id,
        "status": m.status.as_str(),
        "externalMessageId": m.external_message_id,
        "error": m.error,
    })
}

impl Handle for DeliverMessage {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let messages = platform.db.scoped::<Message>(&ctx.tenant_id);
        let message = messages
            .find_by_id(&self.message_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::permanent("the message no longer exists"))?;
        if message.direction != MessageDirection::Outbound {
            return Err(JobError::permanent("only outbound messages are delivered"));
        }

        match message.status {
            MessageStatus::Queued => {}
            // Done by an earlier run (a duplicate job): nothing to do.
            MessageStatus::Sent
            | MessageStatus::Delivered
            | MessageStatus::Read
            | MessageStatus::Failed
            | MessageStatus::Dropped
            | MessageStatus::Received => return Ok(result(&message)),
            MessageStatus::Sending => {
                if Utc::now() - message.updated_at < stale_after() {
                    // Another attempt is sending it right now.
                    return Err(JobError::transient(
                        "the message is being sent by another attempt",
                    ));
                }
                let failed = finish(
                    &ctx,
                    &message.id,
                    MessageStatus::Failed,
                    None,
                    Some("delivery was interrupted and may or may not have reached the customer; it was not resent to avoid a duplicate"),
                )
                .await?;
                tracing::warn!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %message.id, "interrupted delivery marked failed, not resent");
                return Ok(failed.as_ref().map_or_else(|| result(&message), result));
            }
        }

        // Conversation order: an earlier outbound message still on its way
        // goes first. On the last attempt we send anyway rather than never.
        let earlier = messages
            .find_one(doc! {
                "conversationId": &message.conversation_id,
                "direction": "OUTBOUND",
                "status": { "$in": ["QUEUED", "SENDING"] },
                "_id": { "$ne": &message.id },
                "$or": [
                    { "createdAt": { "$lt": bson::DateTime::from_chrono(message.created_at) } },
                    { "createdAt": bson::DateTime::from_chrono(message.created_at), "_id": { "$lt": &message.id } },
                ],
            })
            .await
            .map_err(JobError::transient)?;
        if let Some(earlier) = earlier
            && ctx.attempt < DeliverMessage::MAX_ATTEMPTS
        {
            return Err(JobError::Transient(format!(
                "waiting for earlier message {} of the conversation",
                earlier.id
            )));
        }

        // Claim it: only one run gets past this line.
        let Some(claimed) = messages
            .update_one(
                doc! { "_id": &message.id, "status": "QUEUED" },
                doc! { "$set": { "status": "SENDING", "updatedAt": bson::DateTime::now() } },
            )
            .await
            .map_err(JobError::transient)?
        else {
            return Err(JobError::transient(
                "the message was claimed by another attempt",
            ));
        };
        events::message_updated(&platform.kv, &claimed).await;

        match send(&ctx, &self, &claimed).await {
            Ok(Sent::Delivered(external_id)) => {
                let sent =
                    finish(&ctx, &claimed.id, MessageStatus::Sent, external_id, None).await?;
                tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %claimed.id, "message delivered to the provider");
                Ok(sent.as_ref().map_or_else(|| result(&claimed), result))
            }
            Ok(Sent::Dropped) => {
                let dropped = finish(
                    &ctx,
                    &claimed.id,
                    MessageStatus::Dropped,
                    None,
                    Some("not sent: a person took over the conversation"),
                )
                .await?;
                tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %claimed.id, "bot reply dropped, a human took over");
                Ok(dropped.as_ref().map_or_else(|| result(&claimed), result))
            }
            Err(Failure::Permanent(reason)) => {
                finish(
                    &ctx,
                    &claimed.id,
                    MessageStatus::Failed,
                    None,
                    Some(&reason),
                )
                .await?;
                Err(JobError::Permanent(reason))
            }
            Err(Failure::Retry(reason)) => {
                if ctx.attempt >= DeliverMessage::MAX_ATTEMPTS {
                    finish(
                        &ctx,
                        &claimed.id,
                        MessageStatus::Failed,
                        None,
                        Some(&reason),
                    )
                    .await?;
                } else {
                    // Back to QUEUED so that the retry can claim it again.
                    if let Some(m) = messages
                        .update_one(
                            doc! { "_id": &claimed.id, "status": "SENDING" },
                            doc! { "$set": { "status": "QUEUED", "error": &reason, "updatedAt": bson::DateTime::now() } },
                        )
                        .await
                        .map_err(JobError::transient)?
                    {
                        events::message_updated(&platform.kv, &m).await;
                    }
                }
                Err(JobError::Transient(reason))
            }
        }
    }
}

enum Sent {
    /// Accepted by the provider (or shown to the widget visitor), with the
    /// provider's message id.
    Delivered(Option<String>),
    Dropped,
}

enum Failure {
    Permanent(String),
    Retry(String),
}

async fn send(ctx: &JobContext, job: &DeliverMessage, message: &Message) -> Result<Sent, Failure> {
    let platform = &ctx.state.platform;
    let transient = |e: aigentable_platform::db::DbError| Failure::Retry(e.to_string());
    // Re-read right before sending: staff may have taken over since the
    // reply was generated.
    let conversation = platform
        .db
        .scoped::<Conversation>(&ctx.tenant_id)
        .find_by_id(&message.conversation_id)
        .await
        .map_err(transient)?
        .ok_or_else(|| Failure::Permanent("the conversation no longer exists".to_owned()))?;
    if message.sender_type == SenderType::Agent && !conversation.status.bot_answers() {
        return Ok(Sent::Dropped);
    }
    let channel = platform
        .db
        .scoped::<Channel>(&ctx.tenant_id)
        .find_by_id(&job.channel_id)
        .await
        .map_err(transient)?
        .ok_or_else(|| Failure::Permanent("the channel was deleted".to_owned()))?;
    if !channel.is_active {
        return Err(Failure::Permanent("the channel is inactive".to_owned()));
    }
    if channel.channel_type == ChannelType::Website {
        // The platform is the provider: the visitor's widget receives the
        // message over its socket (or its next poll).
        return Ok(Sent::Delivered(None));
    }
    let target = Target::for_channel(&platform.config.channels, &platform.secrets, &channel)
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    let client = provider_client(ctx);
    let mut last_id = None;
    for (i, part) in split_text(&message.content, max_text_len(channel.channel_type))
        .iter()
        .enumerate()
    {
        match client
            .send_text(&target, &conversation.external_user_id, part)
            .await
        {
            Ok(id) => last_id = Some(id).filter(|s| !s.is_empty()),
            // A later part failing after an earlier one went out: retrying
            // would repeat the earlier part, so it fails for good.
            Err(e) if i > 0 => {
                return Err(Failure::Permanent(format!(
                    "only the first {i} part(s) of the message were sent: {e}"
                )));
            }
            Err(e @ ProviderError::Retryable { .. }) => return Err(Failure::Retry(e.to_string())),
            Err(e) => return Err(Failure::Permanent(e.to_string())),
        }
    }
    Ok(Sent::Delivered(last_id))
}

/// Stores the outcome (only over `SENDING`) and announces it.
async fn finish(
    ctx: &JobContext,
    message_id: &str,
    status: MessageStatus,
    external_id: Option<String>,
    error: Option<&str>,
) -> Result<Option<Message>, JobError> {
    let platform = &ctx.state.platform;
    let mut set = doc! { "status": status.as_str(), "updatedAt": bson::DateTime::now() };
    match error {
        Some(e) => set.insert("error", e),
        None => set.insert("error", bson::Bson::Null),
    };
    if let Some(id) = external_id {
        set.insert("externalMessageId", id);
    }
    let updated = platform
        .db
        .scoped::<Message>(&ctx.tenant_id)
        .update_one(
            doc! { "_id": message_id, "status": "SENDING" },
            doc! { "$set": set },
        )
        .await
        .map_err(JobError::transient)?;
    if let Some(m) = &updated {
        events::message_updated(&platform.kv, m).await;
        if status == MessageStatus::Failed {
            aigentable_platform::analytics::facts::delivery_failed(&platform.db, m).await;
        }
    }
    Ok(updated)
}
