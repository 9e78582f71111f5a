//! `/api/v1/conversations`: what customers said on the tenant's channels
//! and what the agent or staff answered; staff replies, assignment and the
//! status machine; `GET /search/conversations` over message text.
//!
//! Every change publishes `conversation-updated` (tenant room and the
//! conversation's room); every stored message `new-message`.

use std::collections::HashMap;

use bson::{Document, doc};
use chrono::{DateTime, NaiveDate, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use aigentable_jobs::types::{DeliverMessage, SummarizeHandoff};
use aigentable_jobs::{JobRecord, Requester, events};
use aigentable_platform::conversations::{self as service, MoveError, MoveExtras};
use aigentable_platform::db::PageRequest;
use aigentable_platform::domain::{MessageText, regex_escape};
use aigentable_platform::ids::looks_like_id;
use aigentable_platform::model::{
    Channel, Contact, Conversation, ConversationStatus, Message, SenderType, User,
};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body, pagination, path_id, query_enum, query_string, query_token};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};
use crate::views::Pagination;

/// Longest staff message accepted.
pub const MAX_MESSAGE_CHARS: usize = 4_096;
/// Messages returned with one conversation (the latest ones).
const MESSAGES_SHOWN: u64 = 500;
/// Messages scanned by one conversation search.
const SEARCH_SCAN: u64 = 500;

const STATUSES: &str = "ACTIVE, WAITING, ASSIGNED, RESOLVED or CLOSED";

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    /// Conversations, most recent activity first, each with `contact`,
    /// `channel` `{id, type, name}`, `lastMessagePreview`, `lastMessageAt`
    /// and `unreadCount`.
    pub conversations: Vec<Value>,
    pub pagination: Pagination,
}

/// `202`: a staff message stored and queued for delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    /// The `deliver_message` job.
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    /// The stored message (`OUTBOUND`, `HUMAN`, `QUEUED`).
    pub message: Value,
}

/// `{content}` (or `{message}`, as the seed's socket sends it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendInput {
    pub content: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignInput {
    /// A user of the tenant; `null` hands the conversation back to the bot.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub user_id: Option<Option<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusInput {
    /// `ACTIVE`, `WAITING`, `ASSIGNED`, `RESOLVED` or `CLOSED`.
    #[salvo(schema(value_type = String))]
    pub status: ConversationStatus,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// `2024-05-01` (start of that day, UTC) or an RFC 3339 time.
fn parse_date(field: &str, raw: &str, end_of_day: bool) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| ApiError::field(field, "must be a date (YYYY-MM-DD) or an RFC 3339 time"))?;
    let time = if end_of_day {
        day.and_hms_milli_opt(23, 59, 59, 999)
    } else {
        day.and_hms_opt(0, 0, 0)
    };
    time.map(|t| t.and_utc())
        .ok_or_else(|| ApiError::field(field, "is not a valid date"))
}

fn list_filter(req: &Request) -> ApiResult<Document> {
    let mut filter = Document::new();
    for (param, field) in [("channelId", "channelId"), ("agentId", "agentId")] {
        if let Some(id) = query_string(req, param, 64)? {
            filter.insert(field, id);
        }
    }
    if let Some(status) = query_enum::<ConversationStatus>(req, "status", STATUSES)? {
        filter.insert("status", status.as_str());
    }
    let mut range = Document::new();
    if let Some(raw) = query_token(req, "startDate", 40)? {
        range.insert(
            "$gte",
            bson::DateTime::from_chrono(parse_date("startDate", &raw, false)?),
        );
    }
    if let Some(raw) = query_token(req, "endDate", 40)? {
        range.insert(
            "$lte",
            bson::DateTime::from_chrono(parse_date("endDate", &raw, true)?),
        );
    }
    if !range.is_empty() {
        filter.insert("createdAt", range);
    }
    if let Some(term) = query_string(req, "search", 100)? {
        let pattern = regex_escape(&term);
        filter.insert(
            "$or",
            vec![
                doc! { "contactName": { "$regex": &pattern, "$options": "i" } },
                doc! { "externalUserId": { "$regex": &pattern, "$options": "i" } },
                doc! { "lastMessagePreview": { "$regex": &pattern, "$options": "i" } },
            ],
        );
    }
    Ok(filter)
}

/// Conversations with their contact and channel, loaded in two queries.
async fn enrich(
    state: &AppState,
    who: &Caller,
    conversations: &[Conversation],
) -> ApiResult<Vec<Value>> {
    let db = &state.platform.db;
    let ids = |f: fn(&Conversation) -> &String| {
        let mut v: Vec<String> = conversations.iter().map(|c| f(c).clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let contact_ids = ids(|c| &c.contact_id);
    let channel_ids = ids(|c| &c.channel_id);
    let all = |n: usize| PageRequest {
        page: 1,
        limit: u64::try_from(n.max(1)).unwrap_or(100),
    };
    let (contacts, _) = db
        .scoped::<Contact>(&who.tenant_id)
        .find_page(
            doc! { "_id": { "$in": contact_ids.clone() } },
            doc! { "_id": 1 },
            all(contact_ids.len()),
        )
        .await?;
    let (channels, _) = db
        .scoped::<Channel>(&who.tenant_id)
        .find_page(
            doc! { "_id": { "$in": channel_ids.clone() } },
            doc! { "_id": 1 },
            all(channel_ids.len()),
        )
        .await?;
    let contacts: HashMap<&str, &Contact> = contacts.iter().map(|c| (c.id.as_str(), c)).collect();
    let channels: HashMap<&str, &Channel> = channels.iter().map(|c| (c.id.as_str(), c)).collect();
    Ok(conversations
        .iter()
        .map(|c| {
            let contact = contacts.get(c.contact_id.as_str()).copied();
            let channel = channels.get(c.channel_id.as_str()).copied();
            with_relations(c, contact, channel)
        })
        .collect())
}

fn with_relations(c: &Conversation, contact: Option<&Contact>, channel: Option<&Channel>) -> Value {
    let mut view = c.view();
    if let Value::Object(map) = &mut view {
        map.insert(
            "contact".into(),
            contact.map_or_else(
                || json!({ "id": c.contact_id, "name": c.contact_name, "externalId": c.external_user_id }),
                Contact::view,
            ),
        );
        map.insert(
            "channel".into(),
            json!({
                "id": c.channel_id,
                "type": c.channel_type.as_str(),
                "name": channel.map(|ch| ch.name.clone()),
            }),
        );
        map.insert(
            "lastMessage".into(),
            json!({ "preview": c.last_message_preview, "at": c.last_message_at }),
        );
    }
    view
}

/// List conversations (page, limit, channelId, agentId, status, startDate,
/// endDate on the creation time, search in contact names and the last
/// message), most recent activity first.
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("channelId" = Option<String>, Query, description = "Only this channel"),
        ("agentId" = Option<String>, Query, description = "Only this agent"),
        ("status" = Option<String>, Query, description = "ACTIVE, WAITING, ASSIGNED, RESOLVED or CLOSED"),
        ("startDate" = Option<String>, Query, description = "Created at or after (YYYY-MM-DD or RFC 3339)"),
        ("endDate" = Option<String>, Query, description = "Created at or before (YYYY-MM-DD: the whole day)"),
        ("search" = Option<String>, Query, description = "Matches the contact's name or id, or the last message"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ConversationList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let filter = list_filter(req)?;
    let state = app(depot);
    let (conversations, total) = state
        .platform
        .db
        .scoped::<Conversation>(&who.tenant_id)
        .find_page(
            filter,
            doc! { "lastMessageAt": -1, "createdAt": -1, "_id": -1 },
            page,
        )
        .await?;
    Ok(Json(ConversationList {
        conversations: enrich(state, who, &conversations).await?,
        pagination: Pagination::new(page, total),
    }))
}

async fn load(state: &AppState, who: &Caller, id: &str) -> ApiResult<Conversation> {
    state
        .platform
        .db
        .scoped::<Conversation>(&who.tenant_id)
        .find_by_id(id)
        .await?
        .ok_or(ApiError::NotFound("conversation"))
}

/// One conversation with its contact, channel and messages (the latest
/// 500, oldest first). Opening it marks its messages read (`unreadCount`
/// 0).
#[endpoint(tags("conversations"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Conversation id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<Value>> {
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let state = app(depot);
    let db = &state.platform.db;
    let mut conversation = load(state, who, &id).await?;
    if conversation.unread_count != 0
        && let Some(read) = service::mark_read(db, &who.tenant_id, &id).await?
    {
        events::conversation_updated(&state.platform.kv, &read).await;
        conversation = read;
    }
    let mut messages = service::recent_messages(db, &who.tenant_id, &id, MESSAGES_SHOWN).await?;
    messages.reverse();
    let mut view = enrich(state, who, std::slice::from_ref(&conversation))
        .await?
        .pop()
        .unwrap_or_else(|| conversation.view());
    if let Value::Object(map) = &mut view {
        map.insert(
            "messages".into(),
            Value::Array(messages.iter().map(Message::view).collect()),
        );
    }
    Ok(Json(view))
}

/// Stores a staff reply, queues its delivery and tells the browsers. Shared
/// by `POST /conversations/:id/messages` and the socket's `send-message`.
pub async fn send_staff_message(
    state: &AppState,
    who: &Caller,
    conversation_id: &str,
    content: &str,
) -> ApiResult<(Message, JobRecord)> {
    let content = MessageText::parse("content", content, MAX_MESSAGE_CHARS)?;
    let content = content.as_str();
    if !looks_like_id(conversation_id) {
        return Err(ApiError::NotFound("conversation"));
    }
    let conversation = load(state, who, conversation_id).await?;
    if conversation.status == ConversationStatus::Closed {
        return Err(ApiError::Conflict(
            "the conversation is CLOSED; the customer's next message starts a new one".to_owned(),
        ));
    }
    let db = &state.platform.db;
    let message = service::outbound_message(
        &conversation,
        SenderType::Human,
        Some(who.user_id().to_string()),
        content.to_owned(),
    );
    service::insert_message(db, &state.platform.kv, &message).await?;
    let updated = service::note_message(db, &message).await?;
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            DeliverMessage {
                message_id: message.id.clone(),
                conversation_id: conversation.id.clone(),
                channel_id: conversation.channel_id.clone(),
            },
        )
        .await?;
    events::new_message(&state.platform.kv, &message).await;
    events::conversation_updated(&state.platform.kv, &updated.unwrap_or(conversation)).await;
    tracing::info!(tenant_id = %who.tenant_id, conversation_id = %conversation_id, message_id = %message.id, job_id = %job.id, "staff message queued");
    Ok((message, job))
}

/// Send a staff message (`{content}` or `{message}`): stored, then
/// delivered through the channel by a job (202 with the message and job).
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    request_body = SendInput,
    status_codes(202, 400, 404, 409),
    parameters(("id" = String, Path, description = "Conversation id"))
)]
pub async fn send(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<MessageAccepted>> {
    let input: SendInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let content = input
        .content
        .or(input.message)
        .ok_or_else(|| ApiError::field("content", "is required"))?;
    crate::plan_limits::ensure_room(app(depot), who, crate::plan_limits::Adding::Messages(1))
        .await?;
    let (message, job) = send_staff_message(app(depot), who, &id, &content).await?;
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(MessageAccepted {
        accepted: (&job).into(),
        message: message.view(),
    }))
}

fn move_error(e: MoveError) -> ApiError {
    match e {
        MoveError::NotFound => ApiError::NotFound("conversation"),
        MoveError::NotAllowed { .. } => ApiError::because(Reason::InvalidTransition, e.to_string()),
        MoveError::Db(db) => db.into(),
    }
}

/// Assign to a staff member of the tenant (`{userId}`: status `ASSIGNED`,
/// the bot stops answering) or hand back to the bot (`{userId: null}`:
/// `ACTIVE`).
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    request_body = AssignInput,
    status_codes(200, 400, 404, 409),
    parameters(("id" = String, Path, description = "Conversation id"))
)]
pub async fn assign(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<Value>> {
    let input: AssignInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let state = app(depot);
    let db = &state.platform.db;
    let user = input
        .user_id
        .ok_or_else(|| ApiError::field("userId", "is required (null hands back to the bot)"))?;
    let (to, assigned) = match user {
        Some(user_id) => {
            let exists = looks_like_id(&user_id)
                && db
                    .scoped::<User>(&who.tenant_id)
                    .find_by_id(&user_id)
                    .await?
                    .is_some();
            if !exists {
                return Err(ApiError::NotFound("user"));
            }
            if !who.is_admin() && user_id != who.user_id().as_str() {
                return Err(ApiError::Forbidden(
                    "you can assign conversations only to yourself".to_owned(),
                ));
            }
            (ConversationStatus::Assigned, Some(user_id))
        }
        None => (ConversationStatus::Active, None),
    };
    let updated = service::move_status(
        db,
        &who.tenant_id,
        &id,
        to,
        &MoveExtras {
            assigned_to: Some(assigned),
            ..MoveExtras::default()
        },
    )
    .await
    .map_err(move_error)?;
    brief_new_handoff(state, who, &updated).await;
    events::conversation_updated(&state.platform.kv, &updated).await;
    tracing::info!(tenant_id = %who.tenant_id, conversation_id = %id, status = to.as_str(), "conversation assignment changed");
    respond(state, who, &updated).await
}

/// Queues the brief of a handoff that has none yet (staff just took the
/// conversation from the bot). The move already happened: a queue that
/// cannot take the job costs the brief, not the move; staff can ask again.
async fn brief_new_handoff(state: &AppState, who: &Caller, c: &Conversation) {
    let Some(job) = SummarizeHandoff::for_conversation(c) else {
        return;
    };
    if c.handoff.as_ref().is_some_and(|h| h.brief.is_some()) {
        return;
    }
    if let Err(e) = state
        .jobs
        .enqueue(&who.tenant_id, Requester::User(who.user_id().clone()), job)
        .await
    {
        tracing::warn!(tenant_id = %who.tenant_id, conversation_id = %c.id, error = %e, "handoff brief not queued");
    }
}

/// Write the handoff's brief again (the summary, intent, sentiment and
/// sources staff see on the conversation's `handoff`), for the staff member
/// the conversation is assigned to or an administrator. 202 with the
/// `summarize_handoff` job; the brief arrives on the conversation with
/// `conversation-updated`. 409 when the conversation has no handoff.
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    status_codes(202, 403, 404, 409),
    parameters(("id" = String, Path, description = "Conversation id"))
)]
pub async fn regenerate_brief(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<AcceptedJob>> {
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let state = app(depot);
    let conversation = load(state, who, &id).await?;
    if !who.is_admin() && conversation.assigned_to.as_deref() != Some(who.user_id().as_str()) {
        return Err(ApiError::Forbidden(
            "only the staff member the conversation is assigned to, or an administrator, can regenerate its brief"
                .to_owned(),
        ));
    }
    let Some(mut job) = SummarizeHandoff::for_conversation(&conversation) else {
        return Err(ApiError::because(
            Reason::InvalidTransition,
            "the conversation has no handoff to brief: it is answered by the bot".to_owned(),
        ));
    };
    job.regenerate = true;
    let record = state
        .jobs
        .enqueue(&who.tenant_id, Requester::User(who.user_id().clone()), job)
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, conversation_id = %id, job_id = %record.id, "handoff brief queued again");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json((&record).into()))
}

async fn respond(state: &AppState, who: &Caller, c: &Conversation) -> ApiResult<Json<Value>> {
    Ok(Json(
        enrich(state, who, std::slice::from_ref(c))
            .await?
            .pop()
            .unwrap_or_else(|| c.view()),
    ))
}

/// Change the status (`{status}`), following the state machine: `CLOSED`
/// is final and `RESOLVED` only reopens or closes; anything else is a 409
/// naming both states. `ASSIGNED` without an assignee assigns the caller.
#[endpoint(
    tags("conversations"),
    security(("bearerAuth" = [])),
    request_body = StatusInput,
    status_codes(200, 400, 404, 409),
    parameters(("id" = String, Path, description = "Conversation id"))
)]
pub async fn set_status(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<Value>> {
    let input: StatusInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "conversation")?;
    let state = app(depot);
    let current = load(state, who, &id).await?;
    let extras = MoveExtras {
        assigned_to: (input.status == ConversationStatus::Assigned
            && current.assigned_to.is_none())
        .then(|| Some(who.user_id().to_string())),
        ..MoveExtras::default()
    };
    let updated = service::move_status(
        &state.platform.db,
        &who.tenant_id,
        &id,
        input.status,
        &extras,
    )
    .await
    .map_err(move_error)?;
    brief_new_handoff(state, who, &updated).await;
    events::conversation_updated(&state.platform.kv, &updated).await;
    tracing::info!(tenant_id = %who.tenant_id, conversation_id = %id, from = current.status.as_str(), to = input.status.as_str(), "conversation status changed");
    respond(state, who, &updated).await
}

/// Search conversations by the text of their messages (`q`), most recent
/// match first; each has `match`, the latest matching message. Scans the
/// latest 500 matching messages.
#[endpoint(
    tags("search"),
    security(("bearerAuth" = [])),
    parameters(
        ("q" = String, Query, description = "Text to look for in messages"),
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn search(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ConversationList>> {
    let who = caller(depot)?;
    let q = query_string(req, "q", 200)?.ok_or_else(|| ApiError::field("q", "is required"))?;
    let page = pagination(req)?;
    let state = app(depot);
    let db = &state.platform.db;
    let (matches, _) = db
        .scoped::<Message>(&who.tenant_id)
        .find_page(
            doc! { "content": { "$regex": regex_escape(&q), "$options": "i" } },
            doc! { "createdAt": -1, "_id": -1 },
            PageRequest {
                page: 1,
                limit: SEARCH_SCAN,
            },
        )
        .await?;
    // Distinct conversations in order of their latest match.
    let mut order: Vec<&str> = Vec::new();
    let mut first_match: HashMap<&str, &Message> = HashMap::new();
    for m in &matches {
        if !first_match.contains_key(m.conversation_id.as_str()) {
            first_match.insert(&m.conversation_id, m);
            order.push(&m.conversation_id);
        }
    }
    let total = u64::try_from(order.len()).unwrap_or(u64::MAX);
    let skip = usize::try_from(page.skip()).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(100);
    let wanted: Vec<String> = order
        .iter()
        .skip(skip)
        .take(limit)
        .map(|s| (*s).to_owned())
        .collect();
    let (found, _) = db
        .scoped::<Conversation>(&who.tenant_id)
        .find_page(
            doc! { "_id": { "$in": wanted.clone() } },
            doc! { "_id": 1 },
            PageRequest {
                page: 1,
                limit: page.limit,
            },
        )
        .await?;
    let by_id: HashMap<&str, &Conversation> = found.iter().map(|c| (c.id.as_str(), c)).collect();
    let ordered: Vec<Conversation> = wanted
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).map(|c| (*c).clone()))
        .collect();
    let mut views = enrich(state, who, &ordered).await?;
    for (view, c) in views.iter_mut().zip(&ordered) {
        if let (Value::Object(map), Some(m)) = (view, first_match.get(c.id.as_str())) {
            map.insert("match".into(), m.view());
        }
    }
    Ok(Json(ConversationList {
        conversations: views,
        pagination: Pagination::new(page, total),
    }))
}

/// Every route of a conversation (its rating is with the analytics).
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("conversations").get(list))
        .push(Router::with_path("conversations/{id}").get(get))
        .push(Router::with_path("conversations/{id}/messages").post(send))
        .push(Router::with_path("conversations/{id}/assign").put(assign))
        .push(Router::with_path("conversations/{id}/status").put(set_status))
        .push(Router::with_path("conversations/{id}/handoff/brief").post(regenerate_brief))
        .push(Router::with_path("search/conversations").get(search))
}
