//! Delivery, shared by `deliver_message` (a staff member's message) and
//! `deliver_reply` (a message the platform wrote): sends one stored
//! outbound message through its channel, in conversation order, without
//! leaving a customer in silence.
//!
//! The message itself is the lock: a run claims it `QUEUED → SENDING` with
//! one conditional update, so two jobs for the same message (a duplicate
//! enqueue, a retry racing a slow attempt) cannot both send it. Everything
//! that can be read beforehand is read before the claim, so between the
//! claim and the stored outcome there is only the provider call, bounded
//! by [`SEND_WINDOW`]. A bot reply's first run takes the message and its
//! recipient from its job (the reply job stored them a moment before, on
//! a conversation the bot answered) instead of reading them; the claim
//! still takes the message only while it is `QUEUED`. A reply stored first
//! in line in a workspace that delivers at least once is stored `SENDING`
//! already, claimed for that first run ([`stored_claimed`]), which sends it
//! with no claim of its own. Its only other runs are its retries (one job
//! id per message): the first of them dates the claim (the first run's
//! send began at a time it cannot know), and from then on it is a claimed
//! message like any other. When the reply job is run again and finds the
//! reply so, it queues a run that reads the reply and, finding it still
//! claimed and untouched, takes the claim over with one conditional update
//! (see `DeliverReply::take_stored_claim`). A first run stopped once it
//! began runs again as attempt 1 (the queue gives an interrupted run its
//! attempt back) but told that it resumes (`JobContext::resumed`), and it
//! reads the reply as a retry would.
//!
//! A message found `SENDING` past [`stale_after`] was left by an attempt
//! that died around the provider call (the worker was killed): whether the
//! customer got it is unknown, and none of the providers takes an
//! idempotency key. By default it is sent again (a rare duplicate beats an
//! unanswered customer); a tenant whose `deliveryGuarantee` is `atMostOnce`
//! gets it marked `FAILED` instead. A bot reply that fails for good hands
//! the conversation to staff with a note saying so (`conversation-updated`).

use std::time::Duration;

use bson::doc;
use chrono::Utc;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_jobs::types::deliver_reply::ReadyReply;
use aigentable_platform::channels::client::{
    ProviderClient, ProviderError, Target, max_text_len, split_text,
};
use aigentable_platform::conversations;
use aigentable_platform::db::narrowed;
use aigentable_platform::model::conversation::{Handoff, HandoffReason};
use aigentable_platform::model::tenant::DeliveryGuarantee;
use aigentable_platform::model::{
    ChannelType, Conversation, Message, MessageDirection, MessageStatus, SenderType,
};

use crate::runner::{JobContext, JobError};

/// The provider client over the platform's egress guard (its connection
/// pool is shared by the whole process).
pub(crate) fn provider_client(ctx: &JobContext) -> ProviderClient {
    ProviderClient::new(&ctx.state.platform.egress)
}

/// The longest a run may spend between claiming a message and storing the
/// provider's answer: every part of a long message, each bounded by the
/// egress guard's own timeout.
const SEND_WINDOW: Duration = Duration::from_secs(45);

/// A `SENDING` message older than this was left by an attempt that is
/// surely over: its send was bounded by [`SEND_WINDOW`] (plus slack for
/// storing the outcome and for clocks that differ between machines).
fn stale_after() -> chrono::Duration {
    chrono::Duration::from_std(SEND_WINDOW + Duration::from_secs(15))
        .unwrap_or(chrono::Duration::seconds(60))
}

/// How often a run that found the message being sent by another attempt
/// looks at it again.
const SENDING_RECHECK: Duration = Duration::from_secs(3);

const IN_DOUBT: &str = "delivery was interrupted and may or may not have reached the customer; it was not sent again (this workspace delivers at most once)";

fn result(m: &Message) -> Value {
    json!({
        "messageId": m.id,
        "status": m.status.as_str(),
        "externalMessageId": m.external_message_id,
        "error": m.error,
        "resent": m.metadata.get_bool("resent").unwrap_or(false),
    })
}

/// What a delivery job names; both job types send the same way.
pub(crate) struct Delivery<'a> {
    pub message_id: &'a str,
    pub channel_id: &'a str,
    /// The job type's attempts: on the last one, a message waiting for an
    /// earlier one is sent anyway, and a retryable failure is final.
    pub max_attempts: u32,
    /// A bot reply as its job stored it (see [`ReadyReply`]).
    pub ready: Option<&'a ReadyReply>,
    /// A reply found stored claimed is taken over, not waited out (see
    /// `DeliverReply::take_stored_claim`).
    pub take_stored_claim: bool,
}

/// How a run takes the message for its send.
enum Claim {
    /// Stored claimed for this run: nothing to take.
    Held,
    /// `QUEUED → SENDING`.
    Queued,
    /// The claim a reply was stored with, which no run holds.
    Stored,
    /// A claim left by an interrupted attempt, taken over to send again.
    Stale,
}

impl Delivery<'_> {
    /// The reply as stored a moment before, on the first run only: a later
    /// run (a retry, or the first one resumed after it was stopped midway,
    /// maybe after its send) reads what became of it.
    fn fresh(&self, ctx: &JobContext) -> Option<&ReadyReply> {
        self.ready.filter(|r| {
            ctx.first_run()
                && r.message.id == self.message_id
                && r.message.tenant_id == ctx.tenant_id
                && (r.message.status == MessageStatus::Queued
                    || (stored_claimed(&r.message) && r.first_in_line))
        })
    }
}

/// A bot reply stored `SENDING`, claimed for its delivery's first run, and
/// untouched since: a claim, a resend or a retry sets `updatedAt`.
pub(crate) fn stored_claimed(m: &Message) -> bool {
    m.status == MessageStatus::Sending && m.updated_at == m.created_at
}

/// Matches `m` only while it still holds the claim this run read, so a
/// run acting on that claim never takes over a newer one.
fn claim_seen(m: &Message) -> bson::Document {
    doc! { "_id": &m.id, "status": "SENDING", "updatedAt": bson::DateTime::from_chrono(m.updated_at) }
}

pub(crate) async fn deliver(ctx: &JobContext, job: &Delivery<'_>) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let messages = platform.db.scoped::<Message>(&ctx.tenant_id);
    let fresh = job.fresh(ctx);
    // Claimed for this run when it was stored: nothing to claim below.
    let claimed_at_store = fresh.is_some_and(|r| r.message.status == MessageStatus::Sending);
    let message = match fresh {
        // Its claim below still takes it only if it is QUEUED.
        Some(ready) => ready.message.clone(),
        None => messages
            .find_by_id(job.message_id)
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::permanent("the message no longer exists"))?,
    };
    if message.direction != MessageDirection::Outbound {
        return Err(JobError::permanent("only outbound messages are delivered"));
    }

    let claim = match message.status {
        MessageStatus::Queued => Claim::Queued,
        // Done by an earlier run (a duplicate job): nothing to do.
        MessageStatus::Sent
        | MessageStatus::Delivered
        | MessageStatus::Read
        | MessageStatus::Failed
        | MessageStatus::Dropped
        | MessageStatus::Received => return Ok(result(&message)),
        MessageStatus::Sending if claimed_at_store => Claim::Held,
        MessageStatus::Sending if stored_claimed(&message) && job.take_stored_claim => {
            Claim::Stored
        }
        MessageStatus::Sending if stored_claimed(&message) => {
            // Claimed for a first run that may be sending it right now (a
            // stalled run whose lease lapsed goes on until it notices):
            // when that send began is unknown, so the claim is dated now
            // and waited out like any other before it is sent again.
            messages
                .update_one(
                    claim_seen(&message),
                    doc! { "$set": { "updatedAt": bson::DateTime::now() } },
                )
                .await
                .map_err(JobError::transient)?;
            return Err(JobError::Defer {
                after: SENDING_RECHECK,
                reason: "the message is being sent by its first run, or was".to_owned(),
            });
        }
        MessageStatus::Sending => {
            let age = Utc::now() - message.updated_at;
            if age < stale_after() {
                // Another attempt may be sending it right now: wait
                // until it surely is not, without spending attempts
                // (they could run out first and leave it unsent). Looked
                // at again every few seconds, so that a duplicate job
                // ends soon after that attempt stores its outcome rather
                // than a minute later.
                let left = (stale_after() - age).to_std().unwrap_or_default();
                return Err(JobError::Defer {
                    after: left.clamp(Duration::from_millis(200), SENDING_RECHECK),
                    reason: "the message is being sent by another attempt".to_owned(),
                });
            }
            if guarantee(ctx).await? == DeliveryGuarantee::AtMostOnce {
                let failed =
                    finish(ctx, &message, MessageStatus::Failed, None, Some(IN_DOUBT)).await?;
                tracing::warn!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %message.id, "interrupted delivery marked failed, not sent again (at most once)");
                return Ok(failed.as_ref().map_or_else(|| result(&message), result));
            }
            tracing::warn!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %message.id, "interrupted delivery sent again (at least once)");
            Claim::Stale
        }
    };

    // Conversation order: an earlier outbound message still on its way
    // goes first. On the last attempt we send anyway rather than never. A
    // reply stored first in line (see `ReadyReply::first_in_line`) has
    // none on its first run.
    let first_in_line = fresh.is_some_and(|r| r.first_in_line);
    let earlier = if first_in_line {
        None
    } else {
        earlier_unsent(&messages, &message).await?
    };
    if let Some(earlier) = earlier
        && ctx.attempt < job.max_attempts
    {
        return Err(JobError::Transient(format!(
            "waiting for earlier message {} of the conversation",
            earlier.id
        )));
    }

    let prepared = prepare(ctx, job, &message).await;

    // Claim it: only one run gets past this line. A run taking over a
    // claim takes exactly the claim it saw.
    let take = match claim {
        Claim::Held => None,
        Claim::Queued => Some((
            doc! { "_id": &message.id, "status": "QUEUED" },
            doc! { "status": "SENDING", "updatedAt": bson::DateTime::now() },
        )),
        Claim::Stored => Some((
            claim_seen(&message),
            doc! { "updatedAt": bson::DateTime::now() },
        )),
        Claim::Stale => Some((
            claim_seen(&message),
            doc! { "updatedAt": bson::DateTime::now(), "metadata.resent": true },
        )),
    };
    let claimed = match take {
        None => message,
        Some((filter, set)) => messages
            .update_one(filter, doc! { "$set": set })
            .await
            .map_err(JobError::transient)?
            .ok_or_else(|| JobError::transient("the message was claimed by another attempt"))?,
    };

    let outcome = match prepared {
        Err(failure) => Err(failure),
        Ok(Prepared::Dropped) => Ok(Sent::Dropped),
        // The platform is the provider: the visitor's widget receives
        // the message over its socket (or its next poll).
        Ok(Prepared::Widget) => Ok(Sent::Delivered(None)),
        Ok(Prepared::Provider {
            target,
            to,
            max_len,
        }) => {
            match tokio::time::timeout(
                SEND_WINDOW,
                transmit(ctx, &target, &to, &claimed.content, max_len),
            )
            .await
            {
                Ok(sent) => sent,
                Err(_) => Err(Failure::InDoubt),
            }
        }
    };

    match outcome {
        Ok(Sent::Delivered(external_id)) => {
            let sent = finish(ctx, &claimed, MessageStatus::Sent, external_id, None).await?;
            tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %claimed.id, "message delivered to the provider");
            Ok(sent.as_ref().map_or_else(|| result(&claimed), result))
        }
        Ok(Sent::Dropped) => {
            let dropped = finish(
                ctx,
                &claimed,
                MessageStatus::Dropped,
                None,
                Some("not sent: a person took over the conversation"),
            )
            .await?;
            tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, message_id = %claimed.id, "bot reply dropped, a human took over");
            Ok(dropped.as_ref().map_or_else(|| result(&claimed), result))
        }
        Err(Failure::Permanent(reason)) => {
            finish(ctx, &claimed, MessageStatus::Failed, None, Some(&reason)).await?;
            Err(JobError::Permanent(reason))
        }
        Err(Failure::InDoubt) if guarantee(ctx).await? == DeliveryGuarantee::AtMostOnce => {
            finish(ctx, &claimed, MessageStatus::Failed, None, Some(IN_DOUBT)).await?;
            Err(JobError::Permanent(IN_DOUBT.to_owned()))
        }
        Err(failure @ (Failure::Retry(_) | Failure::InDoubt)) => {
            let reason = match failure {
                Failure::Retry(reason) => reason,
                _ => format!(
                    "the provider did not answer within {} s; sending again",
                    SEND_WINDOW.as_secs()
                ),
            };
            if ctx.attempt >= job.max_attempts {
                finish(ctx, &claimed, MessageStatus::Failed, None, Some(&reason)).await?;
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

/// An outbound message of the same conversation, older than `message`,
/// still on its way.
async fn earlier_unsent(
    messages: &aigentable_platform::db::Scoped<Message>,
    message: &Message,
) -> Result<Option<Message>, JobError> {
    let created = bson::DateTime::from_chrono(message.created_at);
    messages
        .find_one(narrowed(
            doc! {
                "conversationId": &message.conversation_id,
                "createdAt": { "$lte": created },
            },
            doc! {
                "direction": "OUTBOUND",
                "status": { "$in": ["QUEUED", "SENDING"] },
                "_id": { "$ne": &message.id },
                "$or": [
                    { "createdAt": { "$lt": created } },
                    { "createdAt": created, "_id": { "$lt": &message.id } },
                ],
            },
        ))
        .await
        .map_err(JobError::transient)
}

/// The tenant's choice for messages left in doubt (default when unknown).
async fn guarantee(ctx: &JobContext) -> Result<DeliveryGuarantee, JobError> {
    let platform = &ctx.state.platform;
    Ok(platform
        .live
        .tenant(&platform.db, &ctx.tenant_id)
        .await
        .map_err(JobError::transient)?
        .map(|t| t.settings.delivery_guarantee)
        .unwrap_or_default())
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
    /// The send did not end within [`SEND_WINDOW`]: it may have reached the
    /// customer or not.
    InDoubt,
}

/// Where a message goes, read before it is claimed.
enum Prepared {
    /// A staff member took over since the bot wrote it.
    Dropped,
    Widget,
    Provider {
        target: Target,
        to: String,
        max_len: usize,
    },
}

async fn prepare(
    ctx: &JobContext,
    job: &Delivery<'_>,
    message: &Message,
) -> Result<Prepared, Failure> {
    let platform = &ctx.state.platform;
    let to = match job.fresh(ctx) {
        // Stored on a conversation the bot answered, a moment ago.
        Some(ready) => ready.to.clone(),
        None => {
            let transient = |e: aigentable_platform::db::DbError| Failure::Retry(e.to_string());
            let conversation = platform
                .db
                .scoped::<Conversation>(&ctx.tenant_id)
                .find_by_id(&message.conversation_id)
                .await
                .map_err(transient)?
                .ok_or_else(|| {
                    Failure::Permanent("the conversation no longer exists".to_owned())
                })?;
            if message.sender_type == SenderType::Agent && !conversation.status.bot_answers() {
                return Ok(Prepared::Dropped);
            }
            conversation.external_user_id
        }
    };
    let channel = ctx
        .state
        .channel(&ctx.tenant_id, job.channel_id)
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?
        .ok_or_else(|| Failure::Permanent("the channel was deleted".to_owned()))?;
    if !channel.is_active {
        return Err(Failure::Permanent("the channel is inactive".to_owned()));
    }
    if channel.channel_type == ChannelType::Website {
        return Ok(Prepared::Widget);
    }
    let target = Target::for_channel(&platform.config.channels, &platform.secrets, &channel)
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    Ok(Prepared::Provider {
        target,
        to,
        max_len: max_text_len(channel.channel_type),
    })
}

/// The provider calls, part by part; nothing else.
async fn transmit(
    ctx: &JobContext,
    target: &Target,
    to: &str,
    content: &str,
    max_len: usize,
) -> Result<Sent, Failure> {
    let client = provider_client(ctx);
    let mut last_id = None;
    for (i, part) in split_text(content, max_len).iter().enumerate() {
        match client.send_text(target, to, part).await {
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

/// Stores the outcome (only over `SENDING`) and announces it. A bot
/// reply that failed for good hands its conversation to staff.
async fn finish(
    ctx: &JobContext,
    message: &Message,
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
            doc! { "_id": &message.id, "status": "SENDING" },
            doc! { "$set": set },
        )
        .await
        .map_err(JobError::transient)?;
    if let Some(m) = &updated {
        events::message_updated(&platform.kv, m).await;
        if status == MessageStatus::Failed {
            aigentable_platform::analytics::facts::delivery_failed(&platform.db, m).await;
            if matches!(m.sender_type, SenderType::Agent | SenderType::System) {
                hand_to_staff(ctx, m).await;
            }
        }
    }
    Ok(updated)
}

/// Nobody is left in silence: staff get the conversation and the reason.
async fn hand_to_staff(ctx: &JobContext, failed: &Message) {
    let platform = &ctx.state.platform;
    let handoff = Handoff::new(
        HandoffReason::DeliveryFailed,
        format!(
            "The bot's reply could not be delivered to the customer ({}). Please answer them.",
            failed.error.as_deref().unwrap_or("unknown error")
        ),
        Some(failed.id.clone()),
    );
    match conversations::hand_to_staff(
        &platform.db,
        &ctx.tenant_id,
        &failed.conversation_id,
        handoff,
    )
    .await
    {
        Ok(Some(conversation)) => {
            events::conversation_updated(&platform.kv, &conversation).await;
            crate::handlers::summarize_handoff::queue_brief(ctx, &conversation).await;
            tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, conversation_id = %failed.conversation_id, message_id = %failed.id, "conversation handed to staff: a bot reply could not be delivered");
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, conversation_id = %failed.conversation_id, error = %e, "a bot reply failed and the conversation could not be handed to staff");
        }
    }
}
