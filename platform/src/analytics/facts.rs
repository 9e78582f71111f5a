//! Analytics facts: one small document per thing that happened (a message
//! received or sent, a handoff, a resolution, a failed delivery, a rating),
//! written where it happens with its time and dimensions. Each fact has a
//! deterministic id, so a retried job or replayed webhook records nothing
//! twice. A fact whose hour was already rolled up marks that hour dirty, and
//! the next rollup re-rolls it.

use bson::doc;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, DbResult};
use crate::model::{Conversation, ConversationStatus, Message, SenderType};

pub const FACTS: &str = "analytics_facts";
/// Hours (per tenant) that got facts after they were rolled up.
pub const DIRTY: &str = "analytics_dirty";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FactKind {
    CustomerMessage,
    BotMessage,
    StaffMessage,
    Handoff,
    Resolved,
    DeliveryFailed,
    Rating,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fact {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub at: DateTime<Utc>,
    pub kind: FactKind,
    pub conversation_id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    pub channel_id: String,
    pub channel_type: String,
    /// A customer message that started its conversation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub started: bool,
    /// A bot or staff message answering a waiting customer: how long the
    /// customer waited (from the first of the unanswered messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<i64>,
    /// The conversation's first answer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub first_response: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<i32>,
    /// A resolution with no staff message and no handoff.
    #[serde(default, skip_serializing_if = "is_false")]
    pub by_bot: bool,
    /// A resolution: time since the conversation was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

/// What analytics keep on the conversation document itself, beside the
/// fields of [`Conversation`] (read from the same document, so capturing
/// costs no extra round trip).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    /// When the oldest unanswered customer message arrived; absent once the
    /// bot or staff answered.
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub awaiting_since: Option<DateTime<Utc>>,
    /// When the bot or staff first answered.
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub first_response_at: Option<DateTime<Utc>>,
    /// The bot passed the conversation to staff at least once.
    #[serde(default)]
    pub handed_off: bool,
    /// Staff wrote in it.
    #[serde(default)]
    pub staff_replied: bool,
    /// Customer satisfaction, 1–5.
    #[serde(default)]
    pub rating: Option<i32>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub rated_at: Option<DateTime<Utc>>,
}

impl Tracking {
    pub fn of(doc: &bson::Document) -> Self {
        bson::from_document(doc.clone()).unwrap_or_default()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}

pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl Fact {
    /// A fact about `conversation` (its dimensions), at `at`.
    pub fn about(
        conversation: &Conversation,
        kind: FactKind,
        id: String,
        at: DateTime<Utc>,
    ) -> Self {
        Fact {
            id,
            tenant_id: conversation.tenant_id.as_str().to_owned(),
            at,
            kind,
            conversation_id: conversation.id.clone(),
            agent_id: conversation.agent_id.clone(),
            channel_id: conversation.channel_id.clone(),
            channel_type: conversation.channel_type.as_str().to_owned(),
            started: false,
            response_ms: None,
            first_response: false,
            tokens: 0,
            rating: None,
            by_bot: false,
            duration_ms: None,
        }
    }
}

/// Who a message counts for: the customer, the bot (its replies and its
/// fallback notice) or staff. Other system notes are not counted.
pub fn sender_kind(message: &Message) -> Option<FactKind> {
    match message.sender_type {
        SenderType::Customer => Some(FactKind::CustomerMessage),
        SenderType::Agent => Some(FactKind::BotMessage),
        SenderType::Human => Some(FactKind::StaffMessage),
        SenderType::System if message.metadata.get_bool("fallback").unwrap_or(false) => {
            Some(FactKind::BotMessage)
        }
        SenderType::System => None,
    }
}

fn tokens_of(message: &Message) -> i64 {
    message
        .metadata
        .get_document("usage")
        .ok()
        .and_then(|u| {
            u.get_i64("totalTokens")
                .ok()
                .or_else(|| u.get_i32("totalTokens").ok().map(i64::from))
        })
        .unwrap_or(0)
}

/// The fact of a stored message, given the conversation as it was just
/// before the message was noted on it (see `conversations::note_message`).
pub fn message_fact(before: &Conversation, tracking: &Tracking, message: &Message) -> Option<Fact> {
    let kind = sender_kind(message)?;
    let mut fact = Fact::about(
        before,
        kind,
        format!("m:{}", message.id),
        message.created_at,
    );
    match kind {
        FactKind::CustomerMessage => fact.started = before.message_count == 0,
        _ => {
            if let Some(since) = tracking.awaiting_since {
                fact.response_ms = Some((message.created_at - since).num_milliseconds().max(0));
                fact.first_response = tracking.first_response_at.is_none();
            }
            fact.tokens = tokens_of(message);
        }
    }
    Some(fact)
}

/// The facts of a status change from `before` to `to` at `at`: a handoff
/// when the bot's conversation goes to staff, a resolution when an open one
/// is resolved or closed.
pub fn move_fact(
    before: &Conversation,
    tracking: &Tracking,
    to: ConversationStatus,
    at: DateTime<Utc>,
) -> Option<Fact> {
    use ConversationStatus::*;
    let stamp = at.timestamp_millis();
    if before.status == Active && matches!(to, Waiting | Assigned) {
        return Some(Fact::about(
            before,
            FactKind::Handoff,
            format!("h:{}:{stamp}", before.id),
            at,
        ));
    }
    if !matches!(before.status, Resolved | Closed) && matches!(to, Resolved | Closed) {
        let mut fact = Fact::about(
            before,
            FactKind::Resolved,
            format!("r:{}:{stamp}", before.id),
            at,
        );
        fact.by_bot = !tracking.handed_off && !tracking.staff_replied && before.status == Active;
        fact.duration_ms = Some((at - before.created_at).num_milliseconds().max(0));
        return Some(fact);
    }
    None
}

/// Whether a move from `from` to `to` hands the conversation to staff.
pub fn is_handoff(from: ConversationStatus, to: ConversationStatus) -> bool {
    from == ConversationStatus::Active
        && matches!(
            to,
            ConversationStatus::Waiting | ConversationStatus::Assigned
        )
}

/// Stores a fact (once: a fact already stored is left as it is). A fact of
/// an hour that has ended marks the hour for a re-roll.
pub async fn record(db: &Db, fact: &Fact) -> DbResult<()> {
    // Grouped with the other jobs' facts of the moment: every message
    // records one.
    let stored = db.insert_grouped(FACTS, fact).await;
    after_insert(db, fact, stored).await
}

/// A fact stored for an hour already rolled up marks that hour to be rolled
/// up again; a duplicate was recorded before.
async fn after_insert(db: &Db, fact: &Fact, stored: DbResult<()>) -> DbResult<()> {
    match stored {
        Ok(()) => {}
        Err(DbError::Duplicate) => return Ok(()),
        Err(other) => return Err(other),
    }
    if hour_of(fact.at) < hour_of(Utc::now()) {
        mark_dirty(db, &fact.tenant_id, hour_of(fact.at)).await?;
    }
    Ok(())
}

/// [`record`], logging instead of failing: analytics never stop a message.
pub async fn record_quietly(db: &Db, fact: &Fact) {
    if let Err(e) = record(db, fact).await {
        warn_not_recorded(fact, &e);
    }
}

fn warn_not_recorded(fact: &Fact, e: &DbError) {
    tracing::warn!(tenant_id = %fact.tenant_id, fact_id = %fact.id, error = %e, "analytics fact not recorded");
}

/// [`record_quietly`] for each fact, in one command (with other jobs'
/// facts of the moment): a message and its reply cost one insert.
pub async fn record_all_quietly(db: &Db, facts: &[Fact]) {
    let stored = db.insert_all_grouped(FACTS, facts).await;
    for (fact, stored) in facts.iter().zip(stored) {
        if let Err(e) = after_insert(db, fact, stored).await {
            warn_not_recorded(fact, &e);
        }
    }
}

/// Stores many facts in one command (bulk seeding, imports); duplicates
/// skipped. The message path records through [`record`], whose inserts
/// are grouped with other jobs' (`group_commit`).
pub async fn record_many(db: &Db, facts: &[Fact]) -> DbResult<()> {
    if facts.is_empty() {
        return Ok(());
    }
    match db
        .unscoped::<Fact>(FACTS)
        .insert_many(facts)
        .ordered(false)
        .await
    {
        Ok(_) => {}
        Err(e) => match DbError::from_write(e) {
            DbError::Duplicate => {}
            other => return Err(other),
        },
    }
    let now = hour_of(Utc::now());
    let mut hours: Vec<(String, DateTime<Utc>)> = facts
        .iter()
        .map(|f| (f.tenant_id.clone(), hour_of(f.at)))
        .filter(|(_, h)| *h < now)
        .collect();
    hours.sort();
    hours.dedup();
    for (tenant, hour) in hours {
        mark_dirty(db, &tenant, hour).await?;
    }
    Ok(())
}

pub async fn mark_dirty(db: &Db, tenant: &str, hour: DateTime<Utc>) -> DbResult<()> {
    db.unscoped::<bson::Document>(DIRTY)
        .update_one(
            doc! { "_id": format!("{tenant}:{}", hour.timestamp()) },
            doc! { "$set": { "tenantId": tenant, "hour": bson::DateTime::from_chrono(hour) } },
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// The dirty hours, removed as they are taken (a fact arriving meanwhile
/// marks its hour again).
pub async fn take_dirty(db: &Db) -> DbResult<Vec<(String, DateTime<Utc>)>> {
    let coll = db.unscoped::<bson::Document>(DIRTY);
    let docs: Vec<bson::Document> = coll.find(doc! {}).await?.try_collect().await?;
    let mut out = Vec::new();
    for d in docs {
        let (Ok(id), Ok(tenant), Ok(hour)) = (
            d.get_str("_id"),
            d.get_str("tenantId"),
            d.get_datetime("hour"),
        ) else {
            continue;
        };
        coll.delete_one(doc! { "_id": id }).await?;
        out.push((tenant.to_owned(), hour.to_chrono()));
    }
    Ok(out)
}

/// A rating's fact (one per conversation): replacing an earlier rating
/// moves its fact, and the hour it left is re-rolled.
pub async fn record_rating(
    db: &Db,
    conversation: &Conversation,
    rating: i32,
    at: DateTime<Utc>,
) -> DbResult<()> {
    let id = format!("rating:{}", conversation.id);
    let coll = db.unscoped::<Fact>(FACTS);
    let old = coll.find_one(doc! { "_id": &id }).await?;
    let mut fact = Fact::about(conversation, FactKind::Rating, id.clone(), at);
    fact.rating = Some(rating);
    coll.replace_one(doc! { "_id": &id }, &fact)
        .upsert(true)
        .await?;
    let now = hour_of(Utc::now());
    if let Some(old) = old
        && hour_of(old.at) < now
    {
        mark_dirty(db, &old.tenant_id, hour_of(old.at)).await?;
    }
    if hour_of(at) < now {
        mark_dirty(db, &fact.tenant_id, hour_of(at)).await?;
    }
    Ok(())
}

/// An outbound bot or staff message ended `FAILED` (counted once per
/// message, whichever path noticed it).
pub async fn delivery_failed(db: &Db, message: &Message) {
    if !matches!(
        sender_kind(message),
        Some(FactKind::BotMessage | FactKind::StaffMessage)
    ) {
        return;
    }
    let conversation = match db
        .scoped::<Conversation>(&message.tenant_id)
        .find_by_id(&message.conversation_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(tenant_id = %message.tenant_id, message_id = %message.id, error = %e, "analytics: failed delivery not recorded");
            return;
        }
    };
    let fact = Fact::about(
        &conversation,
        FactKind::DeliveryFailed,
        format!("f:{}", message.id),
        Utc::now(),
    );
    record_quietly(db, &fact).await;
}
