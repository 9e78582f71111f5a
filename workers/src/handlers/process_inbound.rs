//! `process_inbound`: turns a stored, verified webhook event into contacts,
//! conversations and messages, applies delivery receipts, and asks the
//! agent for a reply.
//!
//! Exactly once: every customer message carries the unique dedup key
//! `in:{channelId}:{externalMessageId}`, so a replayed webhook or a retried
//! job finds it stored and skips it (without a second reply). A crash
//! between storing a message and enqueueing its reply is repaired by the
//! job's retry, which asks again for the reply of a stored, unanswered
//! message (one reply at most: see `retry_reply_request`).

use std::time::Duration;

use bson::doc;
use chrono::Utc;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_jobs::types::{AnswerMessage, ProcessInbound, ReceiveInbound};
use aigentable_platform::analytics::facts::{self, Fact};
use aigentable_platform::conversations::{self, ContactInfo, RedisLock};
use aigentable_platform::ids::new_id;
use aigentable_platform::model::conversation::{inbound_dedup_key, reply_dedup_key};
use aigentable_platform::model::webhook_event::{InboundItem, WebhookEvent};
use aigentable_platform::model::{Channel, Message, MessageDirection, MessageStatus, SenderType};

use crate::runner::{Handle, JobContext, JobError};

/// How long one customer's message may hold the inbound lock, and how long
/// another message of the same customer waits for it.
/// Renewed while the message is stored (see `RedisLock::keep_alive`).
const INBOUND_LOCK_TTL: Duration = Duration::from_secs(5);
const INBOUND_LOCK_WAIT: Duration = Duration::from_secs(20);
/// Within the queue's deduplication window of provider ids, with an hour
/// of slack for clocks.
const SURELY_NEW_WITHIN: Duration =
    ReceiveInbound::DEDUP_TTL.saturating_sub(Duration::from_secs(3600));

#[derive(Debug, Default)]
struct Tally {
    stored: u32,
    duplicates: u32,
    ignored: u32,
    receipts: u32,
    replies: Vec<String>,
    /// The latest stored customer message of each conversation, with its
    /// analytics fact when the reply is to record it.
    to_answer: Vec<(
        aigentable_platform::model::Conversation,
        Message,
        Option<Fact>,
    )>,
    /// Facts of stored messages no reply records: recorded together at the
    /// end.
    facts: Vec<Fact>,
}

impl Tally {
    /// `message` is now the one of its conversation to answer; an earlier
    /// one of the same burst is not answered, and its fact is recorded here.
    fn answer_last(
        &mut self,
        conversation: aigentable_platform::model::Conversation,
        message: Message,
        fact: Option<Fact>,
    ) {
        if let Some(at) = self
            .to_answer
            .iter()
            .position(|(c, _, _)| c.id == conversation.id)
        {
            let (_, _, earlier) = self.to_answer.remove(at);
            self.facts.extend(earlier);
        }
        self.to_answer.push((conversation, message, fact));
    }

    /// Leaves every message still to answer unanswered, its fact to be
    /// recorded here.
    fn answer_none(&mut self) {
        let facts = self.to_answer.drain(..).filter_map(|(_, _, fact)| fact);
        self.facts.extend(facts);
    }
}

impl Handle for ProcessInbound {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let db = &ctx.state.platform.db;
        // The event stays stored; reactivation queues this job again.
        if aigentable_jobs::held::tenant_suspended(db, &ctx.tenant_id)
            .await
            .map_err(JobError::transient)?
        {
            tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, event_id = %self.event_id, "inbound event held: the tenant is suspended");
            return Ok(aigentable_jobs::held::held_result());
        }
        let Some(event) = db
            .scoped::<WebhookEvent>(&ctx.tenant_id)
            .find_by_id(&self.event_id)
            .await
            .map_err(JobError::transient)?
        else {
            return Err(JobError::permanent("the webhook event does not exist"));
        };
        if event.channel_id != self.channel_id {
            return Err(JobError::permanent(
                "the webhook event belongs to another channel",
            ));
        }
        process_event(&ctx, &event, false).await
    }
}

/// Turns a stored event's items into contacts, conversations, messages and
/// reply requests; shared with `receive_inbound`, which stores the event
/// first. `deduplicated`: the items were let through by the queue's
/// deduplication and no earlier run processed them, so a recent message
/// needs no look for a stored copy.
pub(crate) async fn process_event(
    ctx: &JobContext,
    event: &WebhookEvent,
    deduplicated: bool,
) -> Result<Value, JobError> {
    let db = &ctx.state.platform.db;
    let Some(channel) = ctx
        .state
        .channel(&ctx.tenant_id, &event.channel_id)
        .await
        .map_err(JobError::transient)?
    else {
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, channel_id = %event.channel_id, "inbound event skipped: channel deleted");
        return Ok(json!({ "skipped": "the channel no longer exists" }));
    };

    let mut tally = Tally::default();
    let done = match take_items(ctx, &channel, event, deduplicated, &mut tally).await {
        Ok(()) => request_replies(ctx, &mut tally).await,
        Err(e) => Err(e),
    };
    // The facts no reply job carries, in one write whatever happened: a
    // retry finds these messages stored and does not note them again.
    tally.answer_none();
    facts::record_all_quietly(db, &tally.facts).await;
    done?;
    tracing::info!(
        job_id = %ctx.job_id,
        tenant_id = %ctx.tenant_id,
        channel_id = %channel.id,
        stored = tally.stored,
        duplicates = tally.duplicates,
        receipts = tally.receipts,
        "inbound event processed"
    );
    Ok(json!({
        "eventId": event.id,
        "stored": tally.stored,
        "duplicates": tally.duplicates,
        "receipts": tally.receipts,
        "ignored": tally.ignored,
        "replyJobs": tally.replies,
    }))
}

/// Stores the event's messages and applies its receipts into `tally`.
async fn take_items(
    ctx: &JobContext,
    channel: &Channel,
    event: &WebhookEvent,
    deduplicated: bool,
    tally: &mut Tally,
) -> Result<(), JobError> {
    let db = &ctx.state.platform.db;
    for item in &event.items {
        match item {
            InboundItem::Message {
                external_user_id,
                user_name,
                username,
                phone,
                external_message_id,
                text,
                sent_at,
            } => {
                let info = ContactInfo {
                    external_id: external_user_id,
                    name: user_name.as_deref(),
                    username: username.as_deref(),
                    phone: phone.as_deref(),
                };
                let incoming = Incoming {
                    info,
                    external_message_id,
                    text,
                    sent_at: *sent_at,
                };
                process_message(ctx, channel, &incoming, deduplicated, tally).await?;
            }
            InboundItem::Receipt {
                external_message_id,
                status,
                error,
            } => {
                if !matches!(
                    status,
                    MessageStatus::Sent
                        | MessageStatus::Delivered
                        | MessageStatus::Read
                        | MessageStatus::Failed
                ) {
                    tally.ignored += 1;
                    continue;
                }
                let updated = conversations::apply_receipt(
                    db,
                    &ctx.tenant_id,
                    &channel.id,
                    external_message_id,
                    *status,
                    error.as_deref(),
                )
                .await
                .map_err(JobError::transient)?;
                match updated {
                    Some(message) => {
                        tally.receipts += 1;
                        events::message_updated(&ctx.state.platform.kv, &message).await;
                        if message.status == MessageStatus::Failed {
                            aigentable_platform::analytics::facts::delivery_failed(db, &message)
                                .await;
                        }
                    }
                    None => tally.ignored += 1,
                }
            }
        }
    }
    Ok(())
}

struct Incoming<'a> {
    info: ContactInfo<'a>,
    external_message_id: &'a str,
    text: &'a str,
    sent_at: Option<chrono::DateTime<Utc>>,
}

async fn process_message(
    ctx: &JobContext,
    channel: &Channel,
    incoming: &Incoming<'_>,
    deduplicated: bool,
    tally: &mut Tally,
) -> Result<(), JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let text = incoming.text.trim();
    if text.is_empty() {
        // Stickers, images without caption and the like: nothing to answer.
        tally.ignored += 1;
        return Ok(());
    }
    let dedup_key = inbound_dedup_key(&channel.id, incoming.external_message_id);
    let messages = db.scoped::<Message>(&ctx.tenant_id);
    // A copy sent again past the queue's deduplication window must not
    // reopen a conversation: only a recent, deduplicated message skips
    // the look (its unique key still refuses a second copy).
    let surely_new = deduplicated
        && incoming.sent_at.is_some_and(|at| {
            (Utc::now() - at)
                .to_std()
                .is_ok_and(|age| age < SURELY_NEW_WITHIN)
        });
    let stored = if surely_new {
        None
    } else {
        messages
            .find_one(doc! { "dedupKey": &dedup_key })
            .await
            .map_err(JobError::transient)?
    };
    if let Some(stored) = stored {
        tally.duplicates += 1;
        if !ctx.first_run() {
            retry_reply_request(ctx, stored, tally).await?;
        }
        return Ok(());
    }

    // One customer's messages are stored one at a time, so two messages
    // sent together cannot open two conversations.
    let lock_key =
        conversations::inbound_lock_key(&platform.kv, &channel.id, incoming.info.external_id);
    let lock = RedisLock::acquire(&platform.kv, &lock_key, INBOUND_LOCK_TTL, INBOUND_LOCK_WAIT)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::transient("another message of this customer is being stored"))?;
    let alive = lock.keep_alive();
    let stored = store_locked(ctx, channel, incoming, text, dedup_key, surely_new).await;
    drop(alive);
    let release = async {
        if let Err(e) = lock.release().await {
            tracing::warn!(tenant_id = %ctx.tenant_id, error = %e, "inbound lock not released; it expires on its own");
        }
    };
    let Stored {
        message,
        conversation,
        opened,
        fact,
    } = match stored {
        Ok(Some(stored)) => stored,
        done => {
            release.await;
            if matches!(done, Ok(None)) {
                tally.duplicates += 1;
            }
            return done.map(|_| ());
        }
    };
    tally.stored += 1;
    // The lock's release and the message's events go out together: the
    // reply waits for neither.
    tokio::join!(
        release,
        events::new_message_in(&platform.kv, &message, &conversation)
    );
    if opened {
        tracing::info!(tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, channel_id = %channel.id, "conversation opened");
    }

    // Later messages of the same conversation in this event replace it:
    // a burst is answered once, after its last message.
    tally.answer_last(conversation, message, fact);
    Ok(())
}

/// On a retry of this job, a stored message may be one an earlier attempt
/// saved before dying (kill -9, lost lease) without asking for its reply.
/// Asking again is safe: the reply job's id and the reply's unique dedup
/// key allow one reply per message, and the reply job answers only a
/// conversation's latest customer message.
async fn retry_reply_request(
    ctx: &JobContext,
    stored: Message,
    tally: &mut Tally,
) -> Result<(), JobError> {
    let db = &ctx.state.platform.db;
    let answered = db
        .scoped::<Message>(&ctx.tenant_id)
        .find_one(doc! { "dedupKey": reply_dedup_key(&stored.id) })
        .await
        .map_err(JobError::transient)?
        .is_some();
    if answered {
        return Ok(());
    }
    let Some(conversation) = db
        .scoped::<aigentable_platform::model::Conversation>(&ctx.tenant_id)
        .find_by_id(&stored.conversation_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(());
    };
    tally.answer_last(conversation, stored, None);
    Ok(())
}

/// Asks for the reply of each message to answer, in order; on a failure
/// the rest stay in `tally.to_answer`.
async fn request_replies(ctx: &JobContext, tally: &mut Tally) -> Result<(), JobError> {
    while !tally.to_answer.is_empty() {
        let (conversation, message, fact) = tally.to_answer.remove(0);
        match request_reply(ctx, &conversation, &message, fact.as_ref()).await {
            Ok(Some(job)) => tally.replies.push(job),
            Ok(None) => tally.facts.extend(fact),
            Err(e) => {
                tally.facts.extend(fact);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Queues a reply to `message` if the conversation is the bot's. Whether
/// its agent is active is decided by the reply job, which reads the agent
/// anyway: one read per message instead of two. The reply job records the
/// message's `fact` with the reply's, in one write.
async fn request_reply(
    ctx: &JobContext,
    conversation: &aigentable_platform::model::Conversation,
    message: &Message,
    fact: Option<&Fact>,
) -> Result<Option<String>, JobError> {
    let Some(agent_id) = conversation.agent_id.as_deref() else {
        return Ok(None);
    };
    if !conversation.status.bot_answers() {
        return Ok(None);
    }
    let job = AnswerMessage {
        agent_id: agent_id.to_owned(),
        conversation_id: conversation.id.clone(),
        message_id: message.id.clone(),
        conversation: Some(Box::new(conversation.clone())),
        fact: fact.cloned().map(Box::new),
    };
    let id = job.job_id();
    ctx.enqueue_unrecorded(&id, job).await?;
    Ok(Some(id))
}

/// A customer message as [`store_locked`] stored it.
struct Stored {
    message: Message,
    /// Its conversation as updated.
    conversation: aigentable_platform::model::Conversation,
    /// The conversation was opened (created or reopened) by it.
    opened: bool,
    /// Its analytics fact, not recorded yet.
    fact: Option<Fact>,
}

/// Stores the message under the customer's lock: `None` when it was stored
/// already. A message surely new is noted on the customer's open
/// conversation, or on one created for it, by the write that finds it,
/// then stored; any other message finds or opens the conversation, then is
/// stored and noted (its fact recorded).
async fn store_locked(
    ctx: &JobContext,
    channel: &Channel,
    incoming: &Incoming<'_>,
    text: &str,
    dedup_key: String,
    surely_new: bool,
) -> Result<Option<Stored>, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let now = Utc::now();
    let mut metadata = bson::Document::new();
    if let Some(sent_at) = incoming.sent_at {
        metadata.insert("sentAt", bson::DateTime::from_chrono(sent_at));
    }
    let mut message = Message {
        id: new_id(),
        tenant_id: ctx.tenant_id.clone(),
        conversation_id: String::new(),
        channel_id: channel.id.clone(),
        direction: MessageDirection::Inbound,
        sender_type: SenderType::Customer,
        sender_id: None,
        content: text.to_owned(),
        status: MessageStatus::Received,
        external_message_id: Some(incoming.external_message_id.to_owned()),
        error: None,
        reply_to: None,
        dedup_key: Some(dedup_key),
        metadata,
        billed_tokens: None,
        created_at: now,
        updated_at: now,
    };

    if surely_new {
        return store_noted_first(ctx, channel, incoming, message).await;
    }
    let conversations::Destination {
        conversation,
        opened,
        seen,
    } = conversations::conversation_for(db, channel, &incoming.info, !ctx.first_run())
        .await
        .map_err(JobError::transient)?;
    message.conversation_id = conversation.id.clone();
    message.sender_id = Some(conversation.contact_id.clone());
    if !conversations::insert_message(db, &platform.kv, &message)
        .await
        .map_err(JobError::transient)?
    {
        return Ok(None);
    }
    let conversation = conversations::note_customer_message(db, &message, seen.as_ref())
        .await
        .map_err(JobError::transient)?
        .unwrap_or(conversation);
    Ok(Some(Stored {
        message,
        conversation,
        opened,
        fact: None,
    }))
}

/// [`store_locked`] for a surely new message: noted on the customer's open
/// conversation, or on a new one, by the write that finds it; the contact
/// made sure of when the conversation is new or the profile changed; then
/// the message stored (the note taken back if it was stored already) and a
/// RESOLVED conversation reopened. Its fact is left to the caller.
async fn store_noted_first(
    ctx: &JobContext,
    channel: &Channel,
    incoming: &Incoming<'_>,
    mut message: Message,
) -> Result<Option<Stored>, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let mut noted =
        conversations::note_on_open_conversation(db, channel, &mut message, &incoming.info)
            .await
            .map_err(JobError::transient)?;
    noted
        .settle_contact(db, channel, &mut message, &incoming.info)
        .await
        .map_err(JobError::transient)?;
    if !conversations::insert_message(db, &platform.kv, &message)
        .await
        .map_err(JobError::transient)?
    {
        tracing::warn!(tenant_id = %ctx.tenant_id, message_id = %message.id, "a message let through as new was stored already; its note is taken back");
        noted
            .take_back(db, &message)
            .await
            .map_err(JobError::transient)?;
        return Ok(None);
    }
    let conversations::NotedFirst {
        conversation,
        fact,
        created,
        ..
    } = noted;
    let (conversation, reopened) = if created {
        (conversation, true)
    } else {
        conversations::reopen_if_resolved(db, channel, conversation)
            .await
            .map_err(JobError::transient)?
    };
    Ok(Some(Stored {
        message,
        conversation,
        opened: reopened,
        fact,
    }))
}
