//! `/api/v1/agents`: the tenant's AI agents, as the seed's `useAgents` hook
//! uses them (`POST` answers the agent itself; `PUT` the updated agent).

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::events;
use aigentable_platform::db::PageRequest;
use aigentable_platform::domain::{Name, regex_escape};
use aigentable_platform::ids::new_id;
use aigentable_platform::model::agent::{DEFAULT_FALLBACK, DEFAULT_WELCOME};
use aigentable_platform::model::eval::{EvalRun, EvalSet};
use aigentable_platform::model::{
    Agent, AgentStatus, Channel, Conversation, ConversationStatus, DocumentStatus,
    KnowledgeDocument, RetrievalSettings,
};

use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, pagination, path_id, query_enum, query_string};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};
use crate::views::Pagination;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalView {
    /// Passages a reply draws on (1 to 20).
    pub top_k: u32,
    /// Minimum relevance, 0 to 1.
    pub score_threshold: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub personality: String,
    pub instructions: String,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub category: String,
    pub is_active: bool,
    /// `ACTIVE`, `INACTIVE` or `TRAINING`.
    pub status: String,
    pub welcome_message: String,
    pub fallback_message: String,
    pub retrieval: RetrievalView,
    pub ai_provider_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id.clone(),
            tenant_id: a.tenant_id.to_string(),
            name: a.name.clone(),
            description: a.description.clone(),
            personality: a.personality.clone(),
            instructions: a.instructions.clone(),
            model: a.model.clone(),
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            category: a.category.clone(),
            is_active: a.is_active,
            status: a.status.as_str().to_owned(),
            welcome_message: a.welcome_message.clone(),
            fallback_message: a.fallback_message.clone(),
            retrieval: RetrievalView {
                top_k: a.retrieval.top_k,
                score_threshold: a.retrieval.score_threshold,
            },
            ai_provider_id: a.ai_provider_id.clone(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
    pub pagination: Pagination,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalInput {
    #[salvo(schema(minimum = 1, maximum = 20))]
    pub top_k: Option<u32>,
    #[salvo(schema(minimum = 0, maximum = 1))]
    pub score_threshold: Option<f64>,
}

/// Every field optional: `POST` requires `name`, `PUT` changes what is given.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub personality: Option<String>,
    pub instructions: Option<String>,
    /// Chat model, e.g. `gpt-4`.
    pub model: Option<String>,
    /// 0 to 2.
    #[salvo(schema(minimum = 0, maximum = 2))]
    pub temperature: Option<f64>,
    /// 1 to 32000.
    #[salvo(schema(minimum = 1, maximum = 32000))]
    pub max_tokens: Option<u32>,
    /// e.g. `CUSTOMER_SERVICE`.
    pub category: Option<String>,
    pub is_active: Option<bool>,
    pub welcome_message: Option<String>,
    pub fallback_message: Option<String>,
    pub retrieval: Option<RetrievalInput>,
    /// An AI provider of the tenant; `null` uses the tenant's default.
    #[serde(default, deserialize_with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub ai_provider_id: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn bounded(field: &'static str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Validates the given fields into a `$set` document.
async fn changes(depot: &Depot, who: &Caller, input: &AgentInput) -> ApiResult<Document> {
    let mut set = Document::new();
    if let Some(name) = &input.name {
        set.insert("name", Name::parse("name", name, 100)?.into_inner());
    }
    for (field, value, max) in [
        ("description", &input.description, 1_000),
        ("personality", &input.personality, 2_000),
        ("instructions", &input.instructions, 8_000),
        ("welcomeMessage", &input.welcome_message, 1_000),
        ("fallbackMessage", &input.fallback_message, 1_000),
    ] {
        if let Some(v) = value {
            set.insert(field, bounded(field, v, max)?);
        }
    }
    if let Some(model) = &input.model {
        set.insert("model", Name::parse("model", model, 100)?.into_inner());
    }
    if let Some(category) = &input.category {
        set.insert(
            "category",
            Name::parse("category", category, 50)?.into_inner(),
        );
    }
    if let Some(t) = input.temperature {
        if !(0.0..=2.0).contains(&t) || t.is_nan() {
            return Err(ApiError::field("temperature", "must be between 0 and 2"));
        }
        set.insert("temperature", t);
    }
    if let Some(m) = input.max_tokens {
        if !(1..=32_000).contains(&m) {
            return Err(ApiError::field("maxTokens", "must be between 1 and 32000"));
        }
        set.insert("maxTokens", i64::from(m));
    }
    if let Some(active) = input.is_active {
        set.insert("isActive", active);
        set.insert(
            "status",
            if active {
                AgentStatus::Active
            } else {
                AgentStatus::Inactive
            }
            .as_str(),
        );
    }
    if let Some(r) = &input.retrieval {
        if let Some(k) = r.top_k {
            if !(1..=20).contains(&k) {
                return Err(ApiError::field(
                    "retrieval.topK",
                    "must be between 1 and 20",
                ));
            }
            set.insert("retrieval.topK", i64::from(k));
        }
        if let Some(s) = r.score_threshold {
            if !(0.0..=1.0).contains(&s) || s.is_nan() {
                return Err(ApiError::field(
                    "retrieval.scoreThreshold",
                    "must be between 0 and 1",
                ));
            }
            set.insert("retrieval.scoreThreshold", s);
        }
    }
    if let Some(provider) = &input.ai_provider_id {
        match provider {
            None => {
                set.insert("aiProviderId", bson::Bson::Null);
            }
            Some(id) => {
                let known = aigentable_platform::ids::looks_like_id(id)
                    && app(depot)
                        .platform
                        .db
                        .unscoped::<Document>("ai_providers")
                        .find_one(doc! { "_id": id, "tenantId": who.tenant_id.as_str() })
                        .await
                        .map_err(ApiError::internal)?
                        .is_some();
                if !known {
                    return Err(ApiError::field(
                        "aiProviderId",
                        "is not an AI provider of this tenant",
                    ));
                }
                set.insert("aiProviderId", id.as_str());
            }
        }
    }
    Ok(set)
}

/// List agents (page, limit, search, status, category).
#[endpoint(
    tags("agents"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("search" = Option<String>, Query, description = "Matches name or description"),
        ("status" = Option<String>, Query, description = "ACTIVE, INACTIVE or TRAINING"),
        ("category" = Option<String>, Query, description = "Exact category"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AgentList>> {
    listing(req, depot, "search").await
}

/// One page of the tenant's agents, the text filter read from `search_param`.
async fn listing(req: &Request, depot: &Depot, search_param: &str) -> ApiResult<Json<AgentList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let filter = list_filter(req, search_param)?;
    let (agents, total) = app(depot)
        .platform
        .db
        .scoped::<Agent>(&who.tenant_id)
        .find_page(filter, doc! { "createdAt": -1, "_id": -1 }, page)
        .await?;
    Ok(Json(AgentList {
        agents: agents.iter().map(AgentView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

fn list_filter(req: &Request, search_param: &str) -> ApiResult<Document> {
    let mut filter = Document::new();
    if let Some(term) = query_string(req, search_param, 100)? {
        let pattern = regex_escape(&term);
        filter.insert(
            "$or",
            vec![
                doc! { "name": { "$regex": &pattern, "$options": "i" } },
                doc! { "description": { "$regex": &pattern, "$options": "i" } },
            ],
        );
    }
    if let Some(status) = query_enum::<AgentStatus>(req, "status", "ACTIVE, INACTIVE or TRAINING")?
    {
        filter.insert("status", status.as_str());
    }
    if let Some(category) = query_string(req, "category", 50)? {
        filter.insert("category", category);
    }
    Ok(filter)
}

/// Search agents by name and description (`q`), newest first.
#[endpoint(
    tags("search"),
    security(("bearerAuth" = [])),
    parameters(
        ("q" = String, Query, description = "Text to look for in names and descriptions"),
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn search(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AgentList>> {
    if query_string(req, "q", 100)?.is_none() {
        return Err(ApiError::field("q", "is required"));
    }
    listing(req, depot, "q").await
}

/// Create an agent (201 with the agent).
#[endpoint(tags("agents"), security(("bearerAuth" = [])), request_body = AgentInput, status_codes(201, 400))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<AgentView>> {
    let input: AgentInput = json_body(req).await?;
    let who = caller(depot)?;
    if input.name.is_none() {
        return Err(ApiError::field("name", "is required"));
    }
    // Validate everything the way an update would, then build the agent.
    let set = changes(depot, who, &input).await?;
    crate::plan_limits::ensure_room(app(depot), who, crate::plan_limits::Adding::Agents(1)).await?;
    let text = |k: &str, default: &str| {
        set.get_str(k)
            .map(str::to_owned)
            .unwrap_or_else(|_| default.to_owned())
    };
    let is_active = set.get_bool("isActive").unwrap_or(true);
    let now = Utc::now();
    let agent = Agent {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        name: text("name", ""),
        description: text("description", ""),
        personality: text("personality", ""),
        instructions: text("instructions", ""),
        model: text("model", "gpt-4o-mini"),
        temperature: set.get_f64("temperature").unwrap_or(0.7),
        max_tokens: set
            .get_i64("maxTokens")
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1_000),
        category: text("category", "CUSTOMER_SERVICE"),
        is_active,
        status: if is_active {
            AgentStatus::Active
        } else {
            AgentStatus::Inactive
        },
        welcome_message: text("welcomeMessage", DEFAULT_WELCOME),
        fallback_message: text("fallbackMessage", DEFAULT_FALLBACK),
        retrieval: RetrievalSettings {
            top_k: set
                .get_i64("retrieval.topK")
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(RetrievalSettings::default().top_k),
            score_threshold: set
                .get_f64("retrieval.scoreThreshold")
                .unwrap_or(RetrievalSettings::default().score_threshold),
        },
        ai_provider_id: set.get_str("aiProviderId").ok().map(str::to_owned),
        created_by: who.user_id().to_string(),
        created_at: now,
        updated_at: now,
    };
    app(depot)
        .platform
        .db
        .scoped::<Agent>(&who.tenant_id)
        .insert(&agent)
        .await?;
    tracing::info!(agent_id = %agent.id, tenant_id = %who.tenant_id, "agent created");
    res.status_code(StatusCode::CREATED);
    Ok(Json((&agent).into()))
}

/// One agent.
#[endpoint(tags("agents"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Agent id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AgentView>> {
    let who = caller(depot)?;
    let id = path_id(req, "agent")?;
    let agent = app(depot)
        .platform
        .db
        .scoped::<Agent>(&who.tenant_id)
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    Ok(Json((&agent).into()))
}

/// Update an agent with the fields given; answers the updated agent.
#[endpoint(tags("agents"), security(("bearerAuth" = [])), request_body = AgentInput, parameters(("id" = String, Path, description = "Agent id")))]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AgentView>> {
    let input: AgentInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "agent")?;
    let agents = app(depot).platform.db.scoped::<Agent>(&who.tenant_id);
    let current = agents
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    let mut set = changes(depot, who, &input).await?;
    // Training finishes on its own; activating or deactivating waits for it.
    if current.status == AgentStatus::Training {
        set.remove("status");
    }
    if set.is_empty() {
        return Ok(Json((&current).into()));
    }
    set.insert("updatedAt", bson::DateTime::now());
    let updated = agents
        .update_by_id(&id, doc! { "$set": set })
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    tracing::info!(agent_id = %id, tenant_id = %who.tenant_id, "agent updated");
    Ok(Json((&updated).into()))
}

/// Delete an agent (admins). Its documents are purged (each is marked
/// `DELETING` at once and a `purge_document` job removes its vectors and
/// file), and its channels are detached (`agentId` null): their open
/// conversations go to staff (`WAITING`) instead of being answered by an
/// agent that no longer exists.
#[endpoint(tags("agents"), security(("bearerAuth" = [])), status_codes(204, 403, 404), parameters(("id" = String, Path, description = "Agent id")))]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let id = path_id(req, "agent")?;
    let state = app(depot);
    if !state
        .platform
        .db
        .scoped::<Agent>(&who.tenant_id)
        .delete_by_id(&id)
        .await?
    {
        return Err(ApiError::NotFound("agent"));
    }
    let purged = purge_documents(state, who, &id).await?;
    let (channels, conversations) = detach(state, who, &id).await?;
    let db = &state.platform.db;
    db.scoped::<EvalSet>(&who.tenant_id)
        .delete_many(doc! { "agentId": &id })
        .await?;
    db.scoped::<EvalRun>(&who.tenant_id)
        .delete_many(doc! { "agentId": &id })
        .await?;
    tracing::info!(agent_id = %id, tenant_id = %who.tenant_id, documents = purged, channels, conversations, "agent deleted");
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Pages of work done by the agent-deletion loops: each pass changes what
/// it found, so the next pass finds the rest; the bound only guards
/// against a store that does not apply the change.
const CLEANUP_PASSES: usize = 1_000;
const CLEANUP_PAGE: PageRequest = PageRequest {
    page: 1,
    limit: 100,
};

/// Marks the agent's documents `DELETING` and queues their purge, as
/// `DELETE /documents/:id` does for one.
async fn purge_documents(state: &AppState, who: &Caller, agent_id: &str) -> ApiResult<u64> {
    let documents = state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id);
    let mut purged = 0;
    for _ in 0..CLEANUP_PASSES {
        let (page, _) = documents
            .find_page(
                doc! { "agentId": agent_id, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "_id": 1 },
                CLEANUP_PAGE,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for document in page {
            let Some((marked, job)) =
                crate::routes::documents::delete_and_purge(state, who, &document.id).await?
            else {
                continue;
            };
            tracing::info!(document_id = %marked.id, tenant_id = %who.tenant_id, job_id = %job.id, "document of a deleted agent queued for purge");
            purged += 1;
        }
    }
    Ok(purged)
}

/// Detaches the agent from its channels and its open conversations, which
/// go to staff. Returns how many channels and conversations changed.
async fn detach(state: &AppState, who: &Caller, agent_id: &str) -> ApiResult<(u64, u64)> {
    let db = &state.platform.db;
    let channels = db.scoped::<Channel>(&who.tenant_id);
    let mut detached = 0;
    for _ in 0..CLEANUP_PASSES {
        let (page, _) = channels
            .find_page(
                doc! { "agentId": agent_id },
                doc! { "_id": 1 },
                CLEANUP_PAGE,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for channel in page {
            channels
                .update_by_id(
                    &channel.id,
                    doc! { "$set": { "agentId": bson::Bson::Null, "updatedAt": bson::DateTime::now() } },
                )
                .await?;
            detached += 1;
        }
    }
    let conversations = db.scoped::<Conversation>(&who.tenant_id);
    let mut handed = 0;
    for _ in 0..CLEANUP_PASSES {
        let (page, _) = conversations
            .find_page(
                doc! { "agentId": agent_id },
                doc! { "_id": 1 },
                CLEANUP_PAGE,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for conversation in page {
            let mut set = doc! { "agentId": bson::Bson::Null, "updatedAt": bson::DateTime::now() };
            if conversation.status == ConversationStatus::Active {
                set.insert("status", ConversationStatus::Waiting.as_str());
            }
            if let Some(updated) = conversations
                .update_by_id(&conversation.id, doc! { "$set": set })
                .await?
            {
                events::conversation_updated(&state.platform.kv, &updated).await;
                handed += 1;
            }
        }
    }
    Ok((detached, handed))
}
