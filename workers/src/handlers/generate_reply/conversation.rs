//! A customer's message: answered under the conversation's lock, stored
//! once (dedup key), queued for delivery, handed to staff on the fallback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::events;
use aigentable_jobs::types::DeliverReply;
use aigentable_jobs::types::deliver_reply::ReadyReply;
use aigentable_platform::analytics::facts::{self, Fact};
use aigentable_platform::conversations::{self, RedisLock};
use aigentable_platform::handoff_brief;
use aigentable_platform::llm::ChatMessage;
use aigentable_platform::model::conversation::{Handoff, HandoffReason, reply_dedup_key};
use aigentable_platform::model::tenant::DeliveryGuarantee;
use aigentable_platform::model::{
    Agent, AgentStatus, Conversation, Message, MessageDirection, MessageStatus, SenderType, Tenant,
};

use super::compose::{REPLY, compose};
use super::deltas::{Deltas, Target};
use super::prompt::{HISTORY_TOKEN_BUDGET, approx_tokens};
use super::provider::record_unstored_reply_usage;
use crate::runner::{JobContext, JobError};

/// Messages read back to fill the history budget.
const HISTORY_SCAN: u64 = 50;
/// Longer than the job's timeout, so a crashed holder blocks the
/// conversation only briefly and a live one never loses the lock.
/// Renewed while the reply is generated: a worker that dies holding it
/// blocks its conversation for this long at most.
const REPLY_LOCK_TTL: Duration = Duration::from_secs(10);
/// A reply waits this long for the one before it in place; past that it
/// gives its worker slot back (a reply can take a whole LLM call) and runs
/// again after [`REPLY_LOCK_RETRY`], no attempt spent.
const REPLY_LOCK_WAIT: Duration = Duration::from_millis(300);
const REPLY_LOCK_RETRY: Duration = Duration::from_millis(500);

/// What a conversation reply job asks for.
pub(crate) struct Asked<'a> {
    pub agent_id: &'a str,
    pub conversation_id: &'a str,
    pub message_id: Option<&'a str>,
    /// Read by the job already (not suspended).
    pub tenant: &'a Tenant,
    /// The conversation as the job that asked for the reply left it, if it
    /// sent it along: used on the first attempt instead of a read.
    pub known: Option<&'a Conversation>,
    /// The asking message's analytics fact, left to the reply to record
    /// with its own; `carried_recorded` says the reply did.
    pub carried: Option<&'a Fact>,
    pub carried_recorded: AtomicBool,
}

impl<'a> Asked<'a> {
    /// A reply asked for with nothing carried along.
    pub fn new(
        agent_id: &'a str,
        conversation_id: &'a str,
        message_id: Option<&'a str>,
        tenant: &'a Tenant,
    ) -> Self {
        Asked {
            agent_id,
            conversation_id,
            message_id,
            tenant,
            known: None,
            carried: None,
            carried_recorded: AtomicBool::new(false),
        }
    }

    /// Records the carried fact unless the reply did.
    pub async fn record_carried(&self, ctx: &JobContext) {
        if let Some(fact) = self.carried
            && !self.carried_recorded.load(Ordering::Relaxed)
        {
            facts::record_quietly(&ctx.state.platform.db, fact).await;
        }
    }
}

/// Answers the customer message `message_id` in the conversation: skipped
/// when the conversation left the bot, the message is gone, or it was
/// answered already (then its delivery is made sure of).
pub(crate) async fn answer(asked: &Asked<'_>, ctx: &JobContext) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    let Some(message_id) = asked.message_id else {
        return Err(JobError::permanent("a reply needs the message it answers"));
    };
    let conversation_id = asked.conversation_id;
    let known = asked
        .known
        .filter(|c| ctx.first_run() && c.id == conversation_id && c.tenant_id == ctx.tenant_id)
        .cloned();
    let conversation = match known {
        Some(c) => c,
        None => {
            let read = db
                .scoped::<Conversation>(&ctx.tenant_id)
                .find_by_id(conversation_id)
                .await
                .map_err(JobError::transient)?;
            let Some(c) = read else {
                return Ok(json!({ "skipped": "the conversation no longer exists" }));
            };
            c
        }
    };
    if !conversation.status.bot_answers() {
        return Ok(
            json!({ "skipped": format!("the conversation is {}", conversation.status.as_str()) }),
        );
    }
    let lock_key = conversations::reply_lock_key(&platform.kv, conversation_id);
    let lock = RedisLock::acquire(&platform.kv, &lock_key, REPLY_LOCK_TTL, REPLY_LOCK_WAIT)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::Defer {
            after: REPLY_LOCK_RETRY,
            reason: "another reply of this conversation is being generated".to_owned(),
        })?;
    let alive = lock.keep_alive();
    let result = answer_locked(asked, message_id, ctx, &conversation).await;
    drop(alive);
    if let Err(e) = lock.release().await {
        tracing::warn!(tenant_id = %ctx.tenant_id, conversation_id = %conversation_id, error = %e, "reply lock not released; it expires on its own");
    }
    result
}

async fn existing_reply(ctx: &JobContext, message_id: &str) -> Result<Option<Message>, JobError> {
    ctx.state
        .platform
        .db
        .scoped::<Message>(&ctx.tenant_id)
        .find_one(doc! { "dedupKey": reply_dedup_key(message_id) })
        .await
        .map_err(JobError::transient)
}

/// A reply stored by an earlier attempt that may not have been queued for
/// delivery before it stopped. Delivery claims a message once, so queueing
/// it again is harmless.
///
/// A reply stored claimed and untouched since (see [`stores_claimed`]) was
/// perhaps never queued (the attempt that stored it stopped first): a run
/// is queued that takes the claim over if it still finds the reply so.
/// While Redis holds the first run this does nothing (one id per message);
/// the reply as read here is not handed on, since that first run may send
/// it and leave Redis between this read and the push.
async fn ensure_delivery(
    ctx: &JobContext,
    reply: &Message,
    tenant: &Tenant,
) -> Result<Value, JobError> {
    if reply.status == MessageStatus::Queued {
        enqueue_delivery(ctx, reply).await?;
    } else if crate::handlers::delivery::stored_claimed(reply) && stores_claimed(tenant) {
        let job = DeliverReply {
            take_stored_claim: true,
            ..delivery_of(reply)
        };
        push_delivery(ctx, job).await?;
    }
    Ok(json!({ "skipped": "already answered", "replyId": reply.id }))
}

/// Whether a reply stored first in line is stored `SENDING`, claimed for
/// its delivery's first run, which then sends it without a write of its
/// own (one MongoDB write less per reply). Only where an interrupted
/// delivery is sent again anyway: a workspace that delivers at most once
/// keeps the claim in the delivery, where an attempt in doubt is told
/// apart from one that never started.
fn stores_claimed(tenant: &Tenant) -> bool {
    tenant.settings.delivery_guarantee == DeliveryGuarantee::AtLeastOnce
}

pub(crate) async fn enqueue_delivery(
    ctx: &JobContext,
    message: &Message,
) -> Result<String, JobError> {
    push_delivery(ctx, delivery_of(message)).await
}

/// The delivery of `message`, which its run reads.
fn delivery_of(message: &Message) -> DeliverReply {
    DeliverReply {
        message_id: message.id.clone(),
        channel_id: message.channel_id.clone(),
        ready: None,
        take_stored_claim: false,
    }
}

async fn push_delivery(ctx: &JobContext, job: DeliverReply) -> Result<String, JobError> {
    let id = job.job_id();
    ctx.enqueue_unrecorded(&id, job).await?;
    Ok(id)
}

async fn answer_locked(
    asked: &Asked<'_>,
    message_id: &str,
    ctx: &JobContext,
    conversation: &Conversation,
) -> Result<Value, JobError> {
    let platform = &ctx.state.platform;
    let db = &platform.db;
    // The newest messages, read once: the history, the question, its reply
    // if an earlier holder of the lock answered it, and whether the
    // customer wrote again since. A question among them has its reply and
    // any newer message among them too; an older one is read on its own.
    let recent = conversations::recent_messages(db, &ctx.tenant_id, &conversation.id, HISTORY_SCAN)
        .await
        .map_err(JobError::transient)?;
    let reply_key = reply_dedup_key(message_id);
    let (question, existing) = match recent.iter().find(|m| m.id == message_id) {
        Some(q) => (
            Some(q.clone()),
            recent
                .iter()
                .find(|m| m.dedup_key.as_deref() == Some(reply_key.as_str()))
                .cloned(),
        ),
        None => {
            let q = db
                .scoped::<Message>(&ctx.tenant_id)
                .find_by_id(message_id)
                .await
                .map_err(JobError::transient)?;
            let existing = match &q {
                Some(q) => existing_reply(ctx, &q.id).await?,
                None => None,
            };
            (q, existing)
        }
    };
    let Some(question) = question else {
        return Ok(json!({ "skipped": "the message no longer exists" }));
    };
    let question = &question;
    if let Some(existing) = existing {
        return ensure_delivery(ctx, &existing, asked.tenant).await;
    }
    let newer = recent
        .iter()
        .find(|m| m.direction == MessageDirection::Inbound && m.created_at > question.created_at);
    if let Some(newer) = newer {
        // Its own job answers it, with this message in the history.
        return Ok(
            json!({ "skipped": "a newer customer message is answered instead", "newerMessageId": newer.id }),
        );
    }
    let Some(agent) = platform
        .live
        .agent(db, &ctx.tenant_id, asked.agent_id)
        .await
        .map_err(JobError::transient)?
    else {
        return Ok(json!({ "skipped": "the agent no longer exists" }));
    };
    // The inbound path asks for a reply without reading the agent: an
    // agent switched off is found here.
    if !agent.is_active || agent.status == AgentStatus::Inactive {
        return Ok(json!({ "skipped": "the agent is inactive" }));
    }

    let history = conversation_history(&recent, question);
    if handoff_brief::asks_for_a_person(&question.content) {
        return hand_to_a_person(ctx, conversation, question, &agent).await;
    }
    if let Some(cap) = crate::handlers::plan_cap::reached(ctx, asked.tenant).await? {
        return crate::handlers::plan_cap::hand_over(ctx, conversation, question, &agent, cap)
            .await;
    }
    // The reply's id is known before its text, so the deltas shown while
    // it is written and the stored message are the same message.
    let reply_id = aigentable_platform::ids::new_id();
    let mut deltas = Deltas::new(
        ctx,
        Target::Conversation {
            conversation_id: conversation.id.clone(),
            message_id: reply_id.clone(),
        },
    )
    .with_typing_for(conversation);
    let answer = compose(
        ctx,
        &agent,
        history,
        &question.content,
        REPLY,
        Some(&mut deltas),
    )
    .await?;

    // The fallback hands the conversation over; it is sent as a system
    // notice so that delivery, which drops the bot's messages once a human
    // owns the conversation, still sends it.
    let sender = if answer.fallback.is_some() {
        SenderType::System
    } else {
        SenderType::Agent
    };
    let mut reply = conversations::outbound_message(
        conversation,
        sender,
        Some(agent.id.clone()),
        answer.content.clone(),
    );
    reply.id = reply_id;
    reply.reply_to = Some(question.id.clone());
    reply.dedup_key = Some(reply_dedup_key(&question.id));
    reply.metadata = answer.metadata();
    reply.billed_tokens = answer.usage.map(|u| i64::from(u.total_tokens));
    // A human may have taken over while the answer was generated: the
    // conversation takes the reply only while the bot answers it, and only
    // then is the reply stored.
    let noted = if answer.stopped {
        None
    } else {
        conversations::note_bot_reply(db, &reply, asked.carried)
            .await
            .map_err(JobError::transient)?
    };
    let Some(noted) = noted else {
        deltas.abandon().await;
        record_unstored_reply_usage(ctx, &agent, &answer).await;
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, "reply dropped: the conversation left the bot");
        return Ok(json!({ "dropped": "the conversation is no longer answered by the bot" }));
    };
    let first_in_line = first_in_line(&recent, conversation, &noted.conversation);
    if first_in_line && stores_claimed(asked.tenant) {
        reply.status = MessageStatus::Sending;
    }
    // The facts do not wait for the reply, nor the reply for them: the
    // customer is waiting.
    let (inserted, ()) = tokio::join!(
        conversations::store_message(db, &reply),
        noted.record_facts(db)
    );
    asked.carried_recorded.store(true, Ordering::Relaxed);
    let mut conversation_now = noted.conversation;
    if !inserted.map_err(JobError::transient)? {
        record_unstored_reply_usage(ctx, &agent, &answer).await;
        return Ok(json!({ "skipped": "already answered" }));
    }
    // The reply and the tokens it was billed, in one counter update.
    aigentable_platform::usage::count_reply(
        &platform.kv,
        &ctx.tenant_id,
        reply.created_at,
        answer.usage.as_ref(),
    )
    .await;
    events::new_message(&platform.kv, &reply).await;
    // Noted on the conversation while the bot answers it, just now: its
    // delivery's first run takes it from here.
    let ready = ReadyReply {
        message: reply.clone(),
        to: conversation.external_user_id.clone(),
        first_in_line,
    };
    let delivery_job = push_delivery(
        ctx,
        DeliverReply {
            ready: Some(Box::new(ready)),
            ..delivery_of(&reply)
        },
    )
    .await?;
    if let Some(why) = &answer.fallback {
        let handoff = Handoff::new(
            // Without a provider, the fallback means nothing matched.
            if answer.retrieval_only {
                HandoffReason::LowConfidence
            } else {
                HandoffReason::ProviderFailure
            },
            format!("The bot could not answer ({why}) and sent the fallback message."),
            Some(question.id.clone()),
        );
        if let Some(c) = crate::handlers::handoff::to_staff(ctx, &conversation.id, handoff).await {
            conversation_now = c;
        }
    }
    events::conversation_updated(&platform.kv, &conversation_now).await;
    tracing::info!(
        job_id = %ctx.job_id,
        tenant_id = %ctx.tenant_id,
        conversation_id = %conversation.id,
        reply_id = %reply.id,
        retrieval_only = answer.retrieval_only,
        fallback = answer.fallback.is_some(),
        latency_ms = answer.latency_ms,
        "reply stored"
    );
    let mut result = answer.result_json();
    if let Value::Object(map) = &mut result {
        map.insert("replyId".into(), json!(reply.id));
        map.insert("deliveryJobId".into(), json!(delivery_job));
    }
    Ok(result)
}

/// Whether no earlier outbound message of the conversation can be on its
/// way as the reply is stored: `recent` holds the whole conversation, no
/// outbound message in it is unsent, and no message was noted on the
/// conversation between `read` (taken before `recent`) and the reply
/// (`noted`, the conversation as the reply's note left it). A message
/// stored by another process in the instant between its insert and its
/// note is missed, as the delivery's own look would miss one stored just
/// after it.
fn first_in_line(recent: &[Message], read: &Conversation, noted: &Conversation) -> bool {
    recent.len() < HISTORY_SCAN as usize
        && noted.message_count == read.message_count + 1
        && !recent.iter().any(|m| {
            m.direction == MessageDirection::Outbound
                && matches!(m.status, MessageStatus::Queued | MessageStatus::Sending)
        })
}

/// The conversation before `question`, oldest first, within the history
/// budget (newest kept first). Messages customers never saw (dropped or
/// failed replies) are left out.
fn conversation_history(recent_newest_first: &[Message], question: &Message) -> Vec<ChatMessage> {
    let mut budget = HISTORY_TOKEN_BUDGET.saturating_sub(approx_tokens(&question.content));
    let mut kept = Vec::new();
    for m in recent_newest_first {
        if m.id == question.id || m.created_at > question.created_at {
            continue;
        }
        if matches!(m.status, MessageStatus::Dropped | MessageStatus::Failed) {
            continue;
        }
        let turn = match m.sender_type {
            SenderType::Customer => ChatMessage::user(m.content.clone()),
            SenderType::Agent | SenderType::Human | SenderType::System => {
                ChatMessage::assistant(m.content.clone())
            }
        };
        let cost = approx_tokens(&m.content);
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(turn);
    }
    kept.reverse();
    kept
}

/// What the customer reads when they ask for a person.
pub const PERSON_NOTE: &str =
    "Of course. A member of our team will take over this conversation and answer you here shortly.";

/// The customer asked for a person: the bot says a person will answer, and
/// the conversation goes to staff (`WAITING`) with the reason and a brief.
async fn hand_to_a_person(
    ctx: &JobContext,
    conversation: &Conversation,
    question: &Message,
    agent: &Agent,
) -> Result<Value, JobError> {
    let handoff = Handoff::new(
        HandoffReason::CustomerRequest,
        "The customer asked to talk to a person.".to_owned(),
        Some(question.id.clone()),
    );
    let mut result = crate::handlers::handoff::instead_of_a_reply(
        ctx,
        conversation,
        question,
        agent,
        PERSON_NOTE,
        doc! { "handoff": "customer-request" },
        handoff,
    )
    .await?;
    if result.get("skipped").is_none() {
        result["handedOver"] = json!("the customer asked for a person");
        tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, conversation_id = %conversation.id, "conversation handed to staff at the customer's request");
    }
    Ok(result)
}
