//! Conversation service functions shared by the inbound job, the reply job,
//! the api and the Socket.IO gateway: contacts, opening and reopening
//! conversations, storing messages exactly once, counters, receipts, the
//! status machine, and short Redis locks that serialize work per
//! conversation.
//!
//! Publishing events and enqueueing jobs stays with the callers (the jobs
//! crate depends on this one, not the other way round).

use std::sync::LazyLock;
use std::time::Duration;

use bson::{Bson, Document, doc};
use chrono::Utc;

use mongodb::action::Action;
use mongodb::options::ReturnDocument;

use crate::Kv;
use crate::analytics::facts::{self, Fact, FactKind, Tracking};
use crate::db::{Db, DbError, DbResult};
use crate::ids::{TenantId, new_id};
use crate::model::conversation::CONVERSATIONS;
use crate::model::conversation::{ContactSeen, Handoff, HandoffReason};
use crate::model::{
    Channel, Contact, Conversation, ConversationStatus, Message, MessageDirection, MessageStatus,
    SenderType,
};

/// Characters of the last message shown in conversation lists.
pub const PREVIEW_CHARS: usize = 120;

/// The list preview of a message: one line, at most [`PREVIEW_CHARS`].
pub fn preview(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= PREVIEW_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(PREVIEW_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// What a provider told us about the customer.
#[derive(Debug, Clone, Default)]
pub struct ContactInfo<'a> {
    pub external_id: &'a str,
    pub name: Option<&'a str>,
    pub username: Option<&'a str>,
    pub phone: Option<&'a str>,
}

impl ContactInfo<'_> {
    /// The profile as a contact keeps it: blank fields left out.
    pub fn seen(&self) -> ContactSeen {
        let kept = |v: Option<&str>| v.filter(|v| !v.trim().is_empty()).map(str::to_owned);
        ContactSeen {
            name: kept(self.name),
            username: kept(self.username),
            phone: kept(self.phone),
        }
    }
}

/// Where a customer's new message goes (see [`conversation_for`]).
#[derive(Debug, Clone)]
pub struct Destination {
    pub conversation: Conversation,
    /// Created or reopened by this message.
    pub opened: bool,
    /// The profile to note on the conversation with the message, when it
    /// is not the one noted already (see [`note_customer_message`]).
    pub seen: Option<ContactSeen>,
}

/// The conversation a customer's new message belongs to: the open one (any
/// status but `CLOSED`; a `RESOLVED` one is reopened as `ACTIVE`), or a new
/// one answered by the channel's agent (a channel without an agent starts
/// conversations `WAITING` for staff). Callers serialize per customer (see
/// [`inbound_lock_key`]) so that two messages cannot open two conversations.
///
/// With as few reads as a returning customer allows: the open conversation
/// is looked up by the customer's provider id first, and while the message
/// gives the profile last noted on it the contact is neither read nor
/// written (it was brought up to date when that profile was first seen);
/// otherwise the contact is created or refreshed. `check_contact` makes
/// sure of the contact whatever the profile noted: a retry's, whose earlier
/// attempt may have stopped between creating a conversation and its
/// contact (see [`NotedFirst::settle_contact`]).
pub async fn conversation_for(
    db: &Db,
    channel: &Channel,
    info: &ContactInfo<'_>,
    check_contact: bool,
) -> DbResult<Destination> {
    let seen = info.seen();
    let open = find_open(db, channel, info.external_id).await?;
    let (conversation, opened) = match open {
        Some(current) if !check_contact && current.contact_seen.as_ref() == Some(&seen) => {
            reopen_if_resolved(db, channel, current).await?
        }
        Some(current) => {
            upsert_contact(db, channel, info).await?;
            reopen_if_resolved(db, channel, current).await?
        }
        None => return new_conversation(db, channel, info).await,
    };
    let seen = (conversation.contact_seen.as_ref() != Some(&seen)).then_some(seen);
    Ok(Destination {
        conversation,
        opened,
        seen,
    })
}

/// [`conversation_for`] a customer with no open conversation: the contact
/// is created or refreshed and a conversation created.
async fn new_conversation(
    db: &Db,
    channel: &Channel,
    info: &ContactInfo<'_>,
) -> DbResult<Destination> {
    let contact = create_contact_as(db, channel, info, new_id()).await?;
    let (conversation, opened) =
        create_conversation(db, channel, &contact, Some(info.seen())).await?;
    Ok(Destination {
        conversation,
        opened,
        seen: None,
    })
}

/// The contact of `info.external_id` on `channel`, created on first sight;
/// a changed name, username or phone is kept up to date.
async fn upsert_contact(db: &Db, channel: &Channel, info: &ContactInfo<'_>) -> DbResult<Contact> {
    upsert_contact_as(db, channel, info, new_id()).await
}

/// [`upsert_contact_as`] for a customer likely seen for the first time (a
/// new conversation's): the contact is inserted with whatever else is
/// being inserted into `contacts` at that moment (see
/// [`crate::group_commit`]), and only a customer the channel knows already
/// (the unique `{tenantId, channelId, externalId}` refuses the insert)
/// costs the upsert as well. On secantusd-rs a grouped insert costs the
/// server 50–80 µs a document against 330–350 µs for the upsert's
/// `findAndModify`, and a new conversation always wrote one.
async fn create_contact_as(
    db: &Db,
    channel: &Channel,
    info: &ContactInfo<'_>,
    id: String,
) -> DbResult<Contact> {
    let contact = first_seen(channel, info, info.seen(), id, Utc::now());
    match db
        .insert_grouped(crate::model::conversation::CONTACTS, &contact)
        .await
    {
        Ok(()) => Ok(contact),
        Err(DbError::Duplicate) => upsert_contact_as(db, channel, info, contact.id).await,
        Err(e) => Err(e),
    }
}

/// The contact of a customer seen for the first time, as stored.
fn first_seen(
    channel: &Channel,
    info: &ContactInfo<'_>,
    seen: ContactSeen,
    id: String,
    now: chrono::DateTime<Utc>,
) -> Contact {
    Contact {
        id,
        tenant_id: channel.tenant_id.clone(),
        channel_id: channel.id.clone(),
        channel_type: channel.channel_type,
        external_id: info.external_id.to_owned(),
        name: seen.name,
        username: seen.username,
        phone: seen.phone,
        created_at: now,
        updated_at: now,
    }
}

/// [`upsert_contact`] in one round trip (the write that finds the contact
/// creates it or brings its profile up to date); `id` is the contact's id
/// if it is created. A changed profile takes one more write, for its time.
async fn upsert_contact_as(
    db: &Db,
    channel: &Channel,
    info: &ContactInfo<'_>,
    id: String,
) -> DbResult<Contact> {
    let seen = info.seen();
    let now = Utc::now();
    let filter = doc! {
        "tenantId": channel.tenant_id.as_str(),
        "channelId": &channel.id,
        "externalId": info.external_id,
    };
    let mut on_insert = doc! {
        "_id": &id,
        "tenantId": channel.tenant_id.as_str(),
        "channelId": &channel.id,
        "channelType": channel.channel_type.as_str(),
        "externalId": info.external_id,
        "createdAt": bson::DateTime::from_chrono(now),
        "updatedAt": bson::DateTime::from_chrono(now),
    };
    let mut set = Document::new();
    for (field, value) in [
        ("name", &seen.name),
        ("username", &seen.username),
        ("phone", &seen.phone),
    ] {
        match value {
            Some(v) => set.insert(field, v.as_str()),
            None => on_insert.insert(field, Bson::Null),
        };
    }
    let mut update = doc! { "$setOnInsert": on_insert };
    if !set.is_empty() {
        update.insert("$set", set);
    }
    let contacts = db.unscoped::<Contact>(crate::model::conversation::CONTACTS);
    let upsert = || async {
        contacts
            .find_one_and_update(filter.clone(), update.clone())
            .upsert(true)
            .return_document(ReturnDocument::Before)
            .await
            .map_err(DbError::from_write)
    };
    let before = match upsert().await {
        // Two upserts that both found nothing: the loser finds the
        // winner's contact the second time.
        Err(DbError::Duplicate) => upsert().await?,
        other => other?,
    };
    let Some(mut contact) = before else {
        return Ok(first_seen(channel, info, seen, id, now));
    };
    let mut changed = false;
    for (new, old) in [
        (seen.name, &mut contact.name),
        (seen.username, &mut contact.username),
        (seen.phone, &mut contact.phone),
    ] {
        if let Some(new) = new
            && Some(&new) != old.as_ref()
        {
            *old = Some(new);
            changed = true;
        }
    }
    if changed {
        contacts
            .update_one(
                doc! { "_id": &contact.id, "tenantId": channel.tenant_id.as_str() },
                doc! { "$set": { "updatedAt": bson::DateTime::from_chrono(now) } },
            )
            .await?;
        contact.updated_at = now;
    }
    Ok(contact)
}

/// The customer's newest conversation on the channel that is not CLOSED.
async fn find_open(
    db: &Db,
    channel: &Channel,
    external_user_id: &str,
) -> DbResult<Option<Conversation>> {
    let mut open = db
        .scoped::<Conversation>(&channel.tenant_id)
        .find_sorted(
            crate::db::narrowed(
                doc! { "channelId": &channel.id, "externalUserId": external_user_id },
                doc! { "status": { "$ne": ConversationStatus::Closed.as_str() } },
            ),
            doc! { "createdAt": -1 },
            1,
        )
        .await?;
    Ok(open.pop())
}

/// An open conversation as a new customer message finds it: a RESOLVED
/// one goes back to the bot (`true`: reopened).
pub async fn reopen_if_resolved(
    db: &Db,
    channel: &Channel,
    current: Conversation,
) -> DbResult<(Conversation, bool)> {
    if current.status != ConversationStatus::Resolved {
        return Ok((current, false));
    }
    let conversations = db.scoped::<Conversation>(&channel.tenant_id);
    let reopened = conversations
        .update_one(
            doc! { "_id": &current.id, "status": ConversationStatus::Resolved.as_str() },
            doc! { "$set": {
                "status": ConversationStatus::Active.as_str(),
                "assignedTo": Bson::Null,
                "resolvedAt": Bson::Null,
                "updatedAt": bson::DateTime::now(),
            } },
        )
        .await?;
    // Changed meanwhile (staff closed or reopened it): take it as it is now.
    let reopened = match reopened {
        Some(c) => c,
        None => conversations
            .find_by_id(&current.id)
            .await?
            .unwrap_or(current),
    };
    Ok((reopened, true))
}

/// A new conversation of `contact`, answered by the channel's agent (or
/// WAITING for staff when the channel has none).
async fn create_conversation(
    db: &Db,
    channel: &Channel,
    contact: &Contact,
    contact_seen: Option<ContactSeen>,
) -> DbResult<(Conversation, bool)> {
    let mut conversation = fresh_conversation(
        channel,
        contact.id.clone(),
        &contact.external_id,
        shown_name(&contact.name, &contact.username),
    );
    conversation.contact_seen = contact_seen;
    db.scoped::<Conversation>(&channel.tenant_id)
        .insert(&conversation)
        .await?;
    Ok((conversation, true))
}

/// The customer's name in conversation lists: their name, else their
/// username.
fn shown_name(name: &Option<String>, username: &Option<String>) -> Option<String> {
    name.clone().or_else(|| username.clone())
}

/// A conversation as it starts, before its first message is noted.
fn fresh_conversation(
    channel: &Channel,
    contact_id: String,
    external_user_id: &str,
    contact_name: Option<String>,
) -> Conversation {
    let now = Utc::now();
    Conversation {
        id: new_id(),
        tenant_id: channel.tenant_id.clone(),
        channel_id: channel.id.clone(),
        channel_type: channel.channel_type,
        agent_id: channel.agent_id.clone(),
        contact_id,
        external_user_id: external_user_id.to_owned(),
        contact_name,
        status: if channel.agent_id.is_some() {
            ConversationStatus::Active
        } else {
            ConversationStatus::Waiting
        },
        assigned_to: None,
        last_message_preview: None,
        last_message_at: None,
        unread_count: 0,
        message_count: 0,
        resolved_at: None,
        handoff: None,
        contact_seen: None,
        created_at: now,
        updated_at: now,
    }
}

/// The Redis key that serializes inbound processing of one customer.
pub fn inbound_lock_key(kv: &Kv, channel_id: &str, external_user_id: &str) -> String {
    kv.key(&["lock", "inbound", channel_id, external_user_id])
}

/// The Redis key that serializes reply generation in one conversation.
pub fn reply_lock_key(kv: &Kv, conversation_id: &str) -> String {
    kv.key(&["lock", "reply", conversation_id])
}

/// Stores a message; `Ok(false)` when its dedup key shows it is stored
/// already (a replayed webhook, a retried job).
/// Counts it in the tenant's monthly usage counters.
pub async fn insert_message(db: &Db, kv: &Kv, message: &Message) -> DbResult<bool> {
    let stored = store_message(db, message).await?;
    if stored {
        crate::usage::count_message(kv, &message.tenant_id, message.created_at).await;
    }
    Ok(stored)
}

/// [`insert_message`] without the count, for a caller that counts the
/// message together with more in one update ([`crate::usage::count_reply`]).
pub async fn store_message(db: &Db, message: &Message) -> DbResult<bool> {
    match db
        .scoped::<Message>(&message.tenant_id)
        .insert(message)
        .await
    {
        Ok(()) => Ok(true),
        Err(DbError::Duplicate) if message.dedup_key.is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Updates the conversation's last message, counters and time after
/// `message` was stored. Customer messages count as unread.
///
/// The same write keeps the analytics state on the conversation (since when
/// a customer waits for an answer, whether staff wrote) and returns the
/// conversation as it was before, from which the message's analytics fact
/// (response time, conversation started) is recorded.
pub async fn note_message(db: &Db, message: &Message) -> DbResult<Option<Conversation>> {
    note_message_also(db, message, Document::new()).await
}

/// [`note_message`], setting `also` on the conversation in the same write.
async fn note_message_also(
    db: &Db,
    message: &Message,
    also: Document,
) -> DbResult<Option<Conversation>> {
    let noted = note_message_setting(
        db,
        message,
        by_id(message, Document::new()),
        None,
        also,
        None,
    )
    .await?;
    Ok(recorded(db, noted).await)
}

/// [`note_message`] for a customer's message, noting with it the profile
/// the message gave when it differs from the one noted (see
/// [`conversation_for`]).
pub async fn note_customer_message(
    db: &Db,
    message: &Message,
    seen: Option<&ContactSeen>,
) -> DbResult<Option<Conversation>> {
    let also = match seen {
        Some(seen) => seen_set(seen)?,
        None => Document::new(),
    };
    Ok(note_message_also(db, message, also).await?.map(|mut c| {
        if let Some(seen) = seen {
            c.contact_seen = Some(seen.clone());
        }
        c
    }))
}

/// A customer message noted on its open conversation, or on a new one, by
/// [`note_on_open_conversation`], not stored yet.
#[derive(Debug)]
pub struct NotedFirst {
    /// The conversation as noted (with the profile the message gave).
    pub conversation: Conversation,
    /// The profile noted before: the contact needs refreshing when it
    /// differs from the message's.
    pub seen_before: Option<ContactSeen>,
    /// The message's analytics fact, to record once the message is stored.
    pub fact: Option<Fact>,
    /// The customer had no open conversation: this one was created by the
    /// note, for the contact [`NotedFirst::settle_contact`] makes sure of.
    pub created: bool,
}

/// For a customer message that is surely new (its webhook event was stored
/// for the first time a moment ago): notes it on the customer's open
/// conversation (any status but CLOSED) in the same write that finds the
/// conversation, or, when the customer has none, creates the conversation
/// with the message noted on it (an upsert: one round trip where finding,
/// creating and noting take three), and sets the message's conversation.
/// A created conversation names a contact id picked here; the caller
/// stores the contact with [`NotedFirst::settle_contact`] before the
/// message. Then the caller stores the message (see
/// [`unnote_customer_message`] if that finds it stored already), records
/// the fact and reopens a RESOLVED conversation ([`reopen_if_resolved`]).
/// Callers serialize per customer.
pub async fn note_on_open_conversation(
    db: &Db,
    channel: &Channel,
    message: &mut Message,
    info: &ContactInfo<'_>,
) -> DbResult<NotedFirst> {
    let seen = info.seen();
    let open: Vec<&str> = ConversationStatus::ALL
        .iter()
        .filter(|s| **s != ConversationStatus::Closed)
        .map(|s| s.as_str())
        .collect();
    // Equalities on the index's leading fields and one `$in` after them:
    // served by `{tenantId, channelId, externalUserId, status}`.
    let filter = doc! {
        "tenantId": channel.tenant_id.as_str(),
        "channelId": &channel.id,
        "externalUserId": info.external_id,
        "status": { "$in": open },
    };
    let new = fresh_conversation(
        channel,
        new_id(),
        info.external_id,
        shown_name(&seen.name, &seen.username),
    );
    let Some(noted) = note_message_setting(
        db,
        message,
        filter,
        Some(doc! { "createdAt": -1 }),
        seen_set(&seen)?,
        Some(&new),
    )
    .await?
    else {
        return Err(DbError::Codec(
            "an upsert of a conversation returned nothing".into(),
        ));
    };
    let mut conversation = noted.conversation;
    let seen_before = conversation.contact_seen.replace(seen);
    message.conversation_id = conversation.id.clone();
    message.sender_id = Some(conversation.contact_id.clone());
    Ok(NotedFirst {
        conversation,
        seen_before,
        fact: noted.fact,
        created: noted.created,
    })
}

impl NotedFirst {
    /// Makes sure of the contact before the message is stored (a retry
    /// finds the message stored and goes no further): created or
    /// refreshed when the conversation was created or the profile changed,
    /// and a created conversation pointed at the contact when the customer
    /// had one already (all their conversations were closed).
    pub async fn settle_contact(
        &mut self,
        db: &Db,
        channel: &Channel,
        message: &mut Message,
        info: &ContactInfo<'_>,
    ) -> DbResult<()> {
        if !self.created && self.seen_before.as_ref() == self.conversation.contact_seen.as_ref() {
            return Ok(());
        }
        let id = self.conversation.contact_id.clone();
        let contact = if self.created {
            create_contact_as(db, channel, info, id).await?
        } else {
            upsert_contact_as(db, channel, info, id).await?
        };
        let name = shown_name(&contact.name, &contact.username);
        if !self.created
            || (contact.id == self.conversation.contact_id
                && name == self.conversation.contact_name)
        {
            return Ok(());
        }
        db.unscoped::<Document>(CONVERSATIONS)
            .update_one(
                doc! { "_id": &self.conversation.id, "tenantId": channel.tenant_id.as_str() },
                doc! { "$set": { "contactId": &contact.id, "contactName": name.clone() } },
            )
            .await?;
        self.conversation.contact_id = contact.id.clone();
        self.conversation.contact_name = name;
        message.sender_id = Some(contact.id);
        Ok(())
    }

    /// Takes back the note of a message found stored already: a created
    /// conversation goes, an open one gets its counters back.
    pub async fn take_back(&self, db: &Db, message: &Message) -> DbResult<()> {
        if self.created {
            db.unscoped::<Document>(CONVERSATIONS)
                .delete_one(
                    doc! { "_id": &self.conversation.id, "tenantId": message.tenant_id.as_str() },
                )
                .await?;
            return Ok(());
        }
        unnote_customer_message(db, message).await
    }
}

/// Takes back a note of [`note_on_open_conversation`] whose message turned
/// out to be stored already (the queue's deduplication lost its keys): the
/// counters go back; the preview and times it set are those of the same
/// message.
pub async fn unnote_customer_message(db: &Db, message: &Message) -> DbResult<()> {
    let conversations = db.unscoped::<Document>(CONVERSATIONS);
    let this = doc! { "_id": &message.conversation_id, "tenantId": message.tenant_id.as_str() };
    conversations
        .update_one(this.clone(), doc! { "$inc": { "messageCount": -1_i64 } })
        .await?;
    // Staff may have read it meanwhile: never below zero.
    let mut unread = this;
    unread.insert("unreadCount", doc! { "$gt": 0_i64 });
    conversations
        .update_one(unread, doc! { "$inc": { "unreadCount": -1_i64 } })
        .await?;
    Ok(())
}

fn seen_set(seen: &ContactSeen) -> DbResult<Document> {
    Ok(doc! { "contactSeen": bson::to_bson(seen).map_err(|e| DbError::Codec(e.to_string()))? })
}

/// [`note_message`] for a bot's reply, only while the bot answers the
/// conversation: `None` when a human took it over (or it is gone), and
/// nothing was written. Taking over and noting the reply are one write
/// each, so no reply is stored past a takeover. `with`, the fact of the
/// customer message it answers when its inbound job left it to the reply,
/// is recorded in the same write as the reply's.
pub async fn note_bot_reply(
    db: &Db,
    message: &Message,
    with: Option<&Fact>,
) -> DbResult<Option<NotedReply>> {
    let noted = note_message_setting(
        db,
        message,
        by_id(
            message,
            doc! { "status": ConversationStatus::Active.as_str() },
        ),
        None,
        Document::new(),
        None,
    )
    .await?;
    Ok(noted.map(|n| NotedReply {
        conversation: n.conversation,
        facts: n.fact.into_iter().chain(with.cloned()).collect(),
    }))
}

/// A bot reply noted on its conversation. Its analytics facts (the
/// reply's, and the one it carried) are left to
/// [`record_facts`](Self::record_facts), so that the caller can write them
/// beside the reply itself rather than before it.
#[derive(Debug)]
pub struct NotedReply {
    /// The conversation as the note left it.
    pub conversation: Conversation,
    facts: Vec<Fact>,
}

impl NotedReply {
    /// One insert for all the facts; a failure is logged, never fatal.
    pub async fn record_facts(&self, db: &Db) {
        facts::record_all_quietly(db, &self.facts).await;
    }
}

/// The message's conversation, by id (`_id` first: secantusd-rs bounds a
/// flat filter by its first indexed field), under `condition`.
fn by_id(message: &Message, condition: Document) -> Document {
    let mut filter =
        doc! { "_id": &message.conversation_id, "tenantId": message.tenant_id.as_str() };
    filter.extend(condition);
    filter
}

/// The conversation of a note, its message's fact recorded.
async fn recorded(db: &Db, noted: Option<Note>) -> Option<Conversation> {
    let noted = noted?;
    if let Some(fact) = &noted.fact {
        facts::record_quietly(db, fact).await;
    }
    Some(noted.conversation)
}

/// What [`note_message_setting`] wrote.
struct Note {
    /// The conversation as noted.
    conversation: Conversation,
    /// The message's analytics fact, not recorded yet.
    fact: Option<Fact>,
    /// The conversation was created by the note.
    created: bool,
}

/// The one write behind the `note_*` functions, on the conversation
/// `filter` finds first in `sort` order, or on `new`, created when it finds
/// none; `also` is `$set` with it. Returns the conversation as noted and
/// the message's analytics fact (computed from the conversation as it was
/// before), not recorded yet.
async fn note_message_setting(
    db: &Db,
    message: &Message,
    filter: Document,
    sort: Option<Document>,
    also: Document,
    new: Option<&Conversation>,
) -> DbResult<Option<Note>> {
    let unread = i64::from(message.direction == MessageDirection::Inbound);
    let at = bson::DateTime::from_chrono(message.created_at);
    let now = bson::DateTime::now();
    let mut set = doc! {
        "lastMessagePreview": preview(&message.content),
        "lastMessageAt": at,
        "updatedAt": now,
    };
    set.extend(also);
    let mut update = Document::new();
    match facts::sender_kind(message) {
        Some(FactKind::CustomerMessage) => {
            update.insert("$min", doc! { "awaitingSince": at });
        }
        Some(kind @ (FactKind::BotMessage | FactKind::StaffMessage)) => {
            update.insert("$unset", doc! { "awaitingSince": "" });
            update.insert("$min", doc! { "firstResponseAt": at });
            if kind == FactKind::StaffMessage {
                set.insert("staffReplied", true);
            }
        }
        _ => {}
    }
    update.insert("$set", set);
    update.insert(
        "$inc",
        doc! { "messageCount": 1_i64, "unreadCount": unread },
    );
    if let Some(new) = new {
        let mut on_insert = bson::to_document(new).map_err(|e| DbError::Codec(e.to_string()))?;
        // A field is set by one operator only: what the note sets, it sets
        // on the new conversation too.
        for (_, fields) in update.iter() {
            if let Bson::Document(fields) = fields {
                for field in fields.keys() {
                    on_insert.remove(field);
                }
            }
        }
        update.insert("$setOnInsert", on_insert);
    }
    let before = db
        .unscoped::<Document>(CONVERSATIONS)
        .find_one_and_update(filter, update)
        .optional(sort, |q, sort| q.sort(sort))
        .upsert(new.is_some())
        .return_document(ReturnDocument::Before)
        .await
        .map_err(DbError::from_write)?;
    let (mut conversation, tracking, created) = match (before, new) {
        (Some(before), _) => {
            let tracking = Tracking::of(&before);
            let conversation: Conversation =
                bson::from_document(before).map_err(|e| DbError::Codec(e.to_string()))?;
            (conversation, tracking, false)
        }
        (None, Some(new)) => (new.clone(), Tracking::default(), true),
        (None, None) => return Ok(None),
    };
    let fact = facts::message_fact(&conversation, &tracking, message);
    conversation.last_message_preview = Some(preview(&message.content));
    conversation.last_message_at = Some(at.to_chrono());
    conversation.updated_at = now.to_chrono();
    conversation.message_count += 1;
    conversation.unread_count += unread;
    Ok(Some(Note {
        conversation,
        fact,
        created,
    }))
}

/// A new outbound message of `conversation`, `QUEUED` for delivery.
pub fn outbound_message(
    conversation: &Conversation,
    sender_type: SenderType,
    sender_id: Option<String>,
    content: String,
) -> Message {
    let now = Utc::now();
    Message {
        id: new_id(),
        tenant_id: conversation.tenant_id.clone(),
        conversation_id: conversation.id.clone(),
        channel_id: conversation.channel_id.clone(),
        direction: MessageDirection::Outbound,
        sender_type,
        sender_id,
        content,
        status: MessageStatus::Queued,
        external_message_id: None,
        error: None,
        reply_to: None,
        dedup_key: None,
        metadata: Document::new(),
        billed_tokens: None,
        created_at: now,
        updated_at: now,
    }
}

/// Applies a provider receipt to our outbound message with that provider
/// id, only moving it forward (a late `delivered` never undoes `read`).
/// `None` when no message matches or the receipt is stale.
pub async fn apply_receipt(
    db: &Db,
    tenant: &TenantId,
    channel_id: &str,
    external_message_id: &str,
    status: MessageStatus,
    error: Option<&str>,
) -> DbResult<Option<Message>> {
    let behind: Vec<&str> = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ]
    .into_iter()
    .filter(|s| s.rank() < status.rank())
    .map(MessageStatus::as_str)
    .collect();
    if behind.is_empty() {
        return Ok(None);
    }
    let mut set = doc! { "status": status.as_str(), "updatedAt": bson::DateTime::now() };
    if let Some(error) = error {
        set.insert("error", error);
    }
    db.scoped::<Message>(tenant)
        .update_one(
            doc! {
                "channelId": channel_id,
                "externalMessageId": external_message_id,
                "direction": MessageDirection::Outbound.as_str(),
                "status": { "$in": behind },
            },
            doc! { "$set": set },
        )
        .await
}

/// The conversation's latest messages, newest first.
pub async fn recent_messages(
    db: &Db,
    tenant: &TenantId,
    conversation_id: &str,
    limit: u64,
) -> DbResult<Vec<Message>> {
    db.scoped::<Message>(tenant)
        .find_sorted(
            doc! { "conversationId": conversation_id },
            doc! { "createdAt": -1, "_id": -1 },
            limit,
        )
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("conversation not found")]
    NotFound,
    #[error("a conversation cannot move from {} to {}", from.as_str(), to.as_str())]
    NotAllowed {
        from: ConversationStatus,
        to: ConversationStatus,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a status change also sets.
#[derive(Debug, Clone, Default)]
pub struct MoveExtras {
    /// `Some(Some(user))` assigns, `Some(None)` unassigns, `None` keeps.
    pub assigned_to: Option<Option<String>>,
    /// Why the platform hands the conversation over (moves to `WAITING`).
    pub handoff: Option<Handoff>,
}

/// Moves a conversation to `to` if the state machine allows it from its
/// current state. The update is conditional on the state it was read in,
/// so two concurrent changes cannot both apply on a stale view.
pub async fn move_status(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    to: ConversationStatus,
    extras: &MoveExtras,
) -> Result<Conversation, MoveError> {
    let conversations = db.scoped::<Conversation>(tenant);
    let raw = db.unscoped::<Document>(CONVERSATIONS);
    for _ in 0..5 {
        let current = raw
            .find_one(doc! { "_id": id, "tenantId": tenant.as_str() })
            .await
            .map_err(DbError::from)?
            .ok_or(MoveError::NotFound)?;
        let tracking = Tracking::of(&current);
        let current: Conversation =
            bson::from_document(current).map_err(|e| DbError::Codec(e.to_string()))?;
        if !current.status.can_move_to(to) {
            return Err(MoveError::NotAllowed {
                from: current.status,
                to,
            });
        }
        let mut set = doc! { "status": to.as_str(), "updatedAt": bson::DateTime::now() };
        match to {
            ConversationStatus::Resolved | ConversationStatus::Closed => {
                if current.resolved_at.is_none() {
                    set.insert("resolvedAt", bson::DateTime::now());
                }
            }
            _ => {
                set.insert("resolvedAt", Bson::Null);
            }
        }
        // Back to the bot or finished: nobody holds it any more.
        if matches!(
            to,
            ConversationStatus::Active | ConversationStatus::Resolved | ConversationStatus::Closed
        ) {
            set.insert("assignedTo", Bson::Null);
        }
        if let Some(assigned) = &extras.assigned_to {
            set.insert(
                "assignedTo",
                assigned.as_deref().map_or(Bson::Null, Bson::from),
            );
        }
        let handed_off = facts::is_handoff(current.status, to);
        if handed_off {
            set.insert("handedOff", true);
        }
        // The platform's own handoffs say why; any other taking of the
        // conversation from the bot is staff's.
        let handoff = match &extras.handoff {
            Some(h) => Some(h.clone()),
            None if handed_off => Some(Handoff::new(
                HandoffReason::StaffTakeover,
                "A member of staff took over the conversation.".to_owned(),
                None,
            )),
            None => None,
        };
        if let Some(handoff) = &handoff {
            set.insert(
                "handoff",
                bson::to_bson(handoff).map_err(|e| DbError::Codec(e.to_string()))?,
            );
        } else if to == ConversationStatus::Active {
            // Back with the bot: the last handoff's note no longer applies.
            set.insert("handoff", Bson::Null);
        }
        if let Some(updated) = conversations
            .update_one(
                doc! { "_id": id, "status": current.status.as_str() },
                doc! { "$set": set },
            )
            .await?
        {
            if let Some(fact) = facts::move_fact(&current, &tracking, to, updated.updated_at) {
                facts::record_quietly(db, &fact).await;
            }
            return Ok(updated);
        }
        // Its status changed between the read and the write: decide again.
    }
    Err(MoveError::Db(DbError::Codec(
        "the conversation kept changing; please retry".into(),
    )))
}

/// Hands a conversation to staff with `handoff`'s note: to `WAITING` when
/// the bot was answering it; a conversation already with staff only gets
/// the note. Returns it as stored, or `None` when it is resolved or closed
/// (nobody to hand it to).
pub async fn hand_to_staff(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    handoff: Handoff,
) -> Result<Option<Conversation>, MoveError> {
    let conversations = db.scoped::<Conversation>(tenant);
    let Some(current) = conversations.find_by_id(id).await? else {
        return Ok(None);
    };
    match current.status {
        ConversationStatus::Active => {
            let extras = MoveExtras {
                handoff: Some(handoff),
                ..MoveExtras::default()
            };
            move_status(db, tenant, id, ConversationStatus::Waiting, &extras)
                .await
                .map(Some)
        }
        ConversationStatus::Waiting | ConversationStatus::Assigned => {
            let note = bson::to_bson(&handoff).map_err(|e| DbError::Codec(e.to_string()))?;
            Ok(conversations
                .update_one(
                    doc! { "_id": id, "status": current.status.as_str() },
                    doc! { "$set": { "handoff": note, "updatedAt": bson::DateTime::now() } },
                )
                .await?)
        }
        ConversationStatus::Resolved | ConversationStatus::Closed => Ok(None),
    }
}

/// Staff opened the conversation: nothing is unread any more.
pub async fn mark_read(db: &Db, tenant: &TenantId, id: &str) -> DbResult<Option<Conversation>> {
    db.scoped::<Conversation>(tenant)
        .update_one(
            doc! { "_id": id, "unreadCount": { "$ne": 0_i64 } },
            doc! { "$set": { "unreadCount": 0_i64 } },
        )
        .await
}

/// A short exclusive lock in Redis (`SET NX PX` with a random token,
/// released only by its holder), so that work on one conversation or one
/// customer runs one at a time across every worker process. The TTL bounds
/// how long a crashed holder blocks others.
#[derive(Debug)]
pub struct RedisLock {
    kv: Kv,
    key: String,
    token: String,
    ttl: Duration,
    released: bool,
}

impl Drop for RedisLock {
    /// A holder dropped without [`RedisLock::release`] was cancelled (a
    /// run stopped because its lease lapsed, a timeout): nothing works
    /// under the lock any more, so it is given back in the background,
    /// retried while Redis does not answer, rather than left to block the
    /// next holder for its whole TTL.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (kv, key, token, ttl) = (
            self.kv.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
            self.ttl,
        );
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + ttl;
            let mut pause = Duration::from_millis(50);
            while tokio::time::Instant::now() < deadline {
                if release_lock(&kv, &key, &token).await.is_ok() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        });
    }
}

async fn release_lock(kv: &Kv, key: &str, token: &str) -> redis::RedisResult<()> {
    let mut conn = kv.conn();
    RELEASE_LOCK
        .key(key)
        .arg(token)
        .invoke_async::<i64>(&mut conn)
        .await
        .map(|_| ())
}

/// KEYS: lock. ARGV: token, ttl ms. Extends the lock if it is still ours.
static RENEW_LOCK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});

/// KEYS: lock. ARGV: token. Deletes the lock if it is still ours.
static RELEASE_LOCK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

impl RedisLock {
    pub async fn try_acquire(
        kv: &Kv,
        key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<Self>> {
        let token = new_id();
        let set = kv.set_new(key, &token, ttl).await?;
        Ok(set.then(|| Self {
            kv: kv.clone(),
            key: key.to_owned(),
            token,
            ttl,
            released: false,
        }))
    }

    /// Waits up to `wait` for the lock, polling with short growing pauses.
    pub async fn acquire(
        kv: &Kv,
        key: &str,
        ttl: Duration,
        wait: Duration,
    ) -> redis::RedisResult<Option<Self>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(lock) = Self::try_acquire(kv, key, ttl).await? {
                return Ok(Some(lock));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Keeps the lock for as long as the returned guard lives, renewing it
    /// to its TTL every third of it: a short TTL then frees the lock soon
    /// after its holder dies, however long the work under it takes.
    pub fn keep_alive(&self) -> KeepAlive {
        let (kv, key, token) = (self.kv.clone(), self.key.clone(), self.token.clone());
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut tick = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(10)));
        let task = tokio::spawn(async move {
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut conn = kv.conn();
                match RENEW_LOCK
                    .key(&key)
                    .arg(&token)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut conn)
                    .await
                {
                    Ok(1) => {}
                    // Lost (expired and taken): nothing left to renew.
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "lock not renewed, trying again")
                    }
                }
            }
        });
        KeepAlive(task)
    }

    /// Releases the lock if it is still ours (it may have expired and been
    /// taken by someone else meanwhile).
    pub async fn release(mut self) -> redis::RedisResult<()> {
        // Released or not, the caller decided: a failed release expires.
        self.released = true;
        release_lock(&self.kv, &self.key, &self.token).await
    }
}

/// Renews a [`RedisLock`] until dropped.
#[derive(Debug)]
pub struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(preview("hello\n  world"), "hello world");
        let long = "x".repeat(500);
        let p = preview(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS);
        assert!(p.ends_with('…'));
    }
}
