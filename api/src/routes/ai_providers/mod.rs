//! `/api/v1/ai-providers`: the LLM endpoints a tenant answers and embeds
//! with. API keys are sealed with `SecretBox` and never returned: views
//! carry `hasApiKey`, `apiKeyLast4` and `apiKeyMasked`.
//!
//! - One default per tenant: the first provider becomes it; making another
//!   the default sets it first and then unsets the others, so there is
//!   never a moment without one.
//! - Deleting a provider: agents that named it fall back to the tenant's
//!   default (their `aiProviderId` is cleared); deleting the default
//!   promotes the oldest remaining active provider.
//! - When the default provider's embedding model (or dimensions) changes,
//!   every document of the tenant is re-indexed into that model's vector
//!   collection; search switches over once they all are.

use bson::doc;
use chrono::Utc;
use salvo::prelude::*;

use aigentable_jobs::Requester;
use aigentable_jobs::types::{IngestDocument, TestAiProvider};
use aigentable_platform::db::PageRequest;
use aigentable_platform::ids::{TenantId, new_id};
use aigentable_platform::model::{Agent, AiProvider, DocumentStatus, KnowledgeDocument};

mod input;
mod views;

pub use input::AiProviderInput;
pub use views::{AiProviderList, AiProviderView, ProviderTestAccepted};

use input::apply;

use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, pagination, path_id};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};
use crate::views::Pagination;

/// What decides the vector collection: the default provider's embedding
/// model and requested dimensions.
fn embedding_signature(p: Option<&AiProvider>) -> Option<(String, Option<u32>)> {
    let p = p?;
    Some((p.embedding_model()?.to_owned(), p.embedding_dimensions))
}

async fn default_provider(state: &AppState, tenant: &TenantId) -> ApiResult<Option<AiProvider>> {
    Ok(aigentable_platform::llm::resolve_provider(&state.platform.db, tenant, None).await?)
}

/// Makes `id` the only default: set first, then the others unset.
async fn make_default(state: &AppState, tenant: &TenantId, id: &str) -> ApiResult<()> {
    let providers = state.platform.db.scoped::<AiProvider>(tenant);
    providers
        .update_by_id(
            id,
            doc! { "$set": { "isDefault": true, "updatedAt": bson::DateTime::now() } },
        )
        .await?;
    // At most a handful of providers per tenant: one update each.
    while providers
        .update_one(
            doc! { "isDefault": true, "_id": { "$ne": id } },
            doc! { "$set": { "isDefault": false, "updatedAt": bson::DateTime::now() } },
        )
        .await?
        .is_some()
    {}
    Ok(())
}

/// When there is no active default, the oldest active provider becomes it.
async fn ensure_default(state: &AppState, tenant: &TenantId) -> ApiResult<()> {
    if default_provider(state, tenant).await?.is_some() {
        return Ok(());
    }
    let (oldest, _) = state
        .platform
        .db
        .scoped::<AiProvider>(tenant)
        .find_page(
            doc! { "isActive": true },
            doc! { "createdAt": 1, "_id": 1 },
            PageRequest { page: 1, limit: 1 },
        )
        .await?;
    if let Some(p) = oldest.first() {
        make_default(state, tenant, &p.id).await?;
    }
    Ok(())
}

/// Re-indexes every document of the tenant (into the collection of the
/// default provider's embedding model, or the BM25 one without).
pub async fn reindex_tenant(state: &AppState, who: &Caller) -> ApiResult<u64> {
    let documents = state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id);
    let model = match embedding_signature(default_provider(state, &who.tenant_id).await?.as_ref()) {
        Some((name, Some(dims))) => format!("{name}/{dims}"),
        Some((name, None)) => name,
        None => "bm25".to_owned(),
    };
    let mut page = 1;
    let mut queued = 0u64;
    loop {
        let (docs, _) = documents
            .find_page(
                doc! { "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "_id": 1 },
                PageRequest { page, limit: 100 },
            )
            .await?;
        if docs.is_empty() {
            break;
        }
        for d in &docs {
            state
                .jobs
                .enqueue(
                    &who.tenant_id,
                    Requester::User(who.user_id().clone()),
                    IngestDocument {
                        document_id: d.id.clone(),
                        agent_id: d.agent_id.clone(),
                        reindex_for: Some(model.clone()),
                    },
                )
                .await?;
            queued += 1;
        }
        page += 1;
    }
    tracing::info!(tenant_id = %who.tenant_id, documents = queued, "knowledge re-indexing for a new embedding model");
    Ok(queued)
}

/// Re-indexes when the default provider's embedding settings changed.
async fn reindex_if_changed(
    state: &AppState,
    who: &Caller,
    before: Option<(String, Option<u32>)>,
) -> ApiResult<()> {
    let after = embedding_signature(default_provider(state, &who.tenant_id).await?.as_ref());
    if before != after {
        reindex_tenant(state, who).await?;
    }
    Ok(())
}

async fn load(state: &AppState, who: &Caller, id: &str) -> ApiResult<AiProvider> {
    state
        .platform
        .db
        .scoped::<AiProvider>(&who.tenant_id)
        .find_by_id(id)
        .await?
        .ok_or(ApiError::NotFound("AI provider"))
}

/// List the tenant's AI providers (default first).
#[endpoint(
    tags("ai-providers"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AiProviderList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let (items, total) = app(depot)
        .platform
        .db
        .scoped::<AiProvider>(&who.tenant_id)
        .find_page(
            doc! {},
            doc! { "isDefault": -1, "createdAt": 1, "_id": 1 },
            page,
        )
        .await?;
    Ok(Json(AiProviderList {
        providers: items.iter().map(AiProviderView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// One AI provider.
#[endpoint(tags("ai-providers"), security(("bearerAuth" = [])), status_codes(200, 404), parameters(("id" = String, Path, description = "AI provider id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AiProviderView>> {
    let who = caller(depot)?;
    let id = path_id(req, "AI provider")?;
    let p = load(app(depot), who, &id).await?;
    Ok(Json((&p).into()))
}

/// Add an AI provider (admins; 201). The tenant's first provider becomes
/// its default.
#[endpoint(tags("ai-providers"), security(("bearerAuth" = [])), request_body = AiProviderInput, status_codes(201, 400, 403))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<AiProviderView>> {
    let input: AiProviderInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    if input.name.is_none() {
        return Err(ApiError::field("name", "is required"));
    }
    let Some(provider_type) = input.provider_type else {
        return Err(ApiError::field(
            "type",
            "is required (OPENAI, AZURE_OPENAI or OPENAI_COMPATIBLE)",
        ));
    };
    let now = Utc::now();
    let mut p = AiProvider {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        name: String::new(),
        provider_type,
        base_url: None,
        api_version: None,
        api_key: None,
        api_key_last4: None,
        chat_model: String::new(),
        embedding_model: None,
        embedding_dimensions: None,
        is_default: false,
        is_active: true,
        created_at: now,
        updated_at: now,
    };
    apply(state, &mut p, &input)?;
    let before = embedding_signature(default_provider(state, &who.tenant_id).await?.as_ref());
    let providers = state.platform.db.scoped::<AiProvider>(&who.tenant_id);
    let first = providers.count(doc! {}).await? == 0;
    let wants_default = input.is_default.unwrap_or(false) || first;
    providers.insert(&p).await?;
    if wants_default && p.is_active {
        make_default(state, &who.tenant_id, &p.id).await?;
    } else {
        ensure_default(state, &who.tenant_id).await?;
    }
    reindex_if_changed(state, who, before).await?;
    let stored = load(state, who, &p.id).await?;
    tracing::info!(tenant_id = %who.tenant_id, provider_id = %p.id, provider_type = p.provider_type.as_str(), "ai provider created");
    res.status_code(StatusCode::CREATED);
    Ok(Json((&stored).into()))
}

/// Update an AI provider (admins) with the fields given.
#[endpoint(tags("ai-providers"), security(("bearerAuth" = [])), request_body = AiProviderInput, status_codes(200, 400, 403, 404), parameters(("id" = String, Path, description = "AI provider id")))]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<AiProviderView>> {
    let input: AiProviderInput = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "AI provider")?;
    let state = app(depot);
    let mut p = load(state, who, &id).await?;
    let before = embedding_signature(default_provider(state, &who.tenant_id).await?.as_ref());
    apply(state, &mut p, &input)?;
    if input.is_default == Some(false) && p.is_default {
        return Err(ApiError::field(
            "isDefault",
            "cannot be unset; make another provider the default instead",
        ));
    }
    if input.is_default == Some(true) && !p.is_active {
        return Err(ApiError::field(
            "isDefault",
            "an inactive provider cannot be the default",
        ));
    }
    let mut set = aigentable_platform::db::to_document(&p)?;
    for k in ["_id", "tenantId", "createdAt", "isDefault"] {
        set.remove(k);
    }
    set.insert("updatedAt", bson::DateTime::now());
    let providers = state.platform.db.scoped::<AiProvider>(&who.tenant_id);
    providers
        .update_by_id(&id, doc! { "$set": set })
        .await?
        .ok_or(ApiError::NotFound("AI provider"))?;
    if input.is_default == Some(true) {
        make_default(state, &who.tenant_id, &id).await?;
    } else if !p.is_active && p.is_default {
        // A deactivated default hands over to the oldest active provider.
        providers
            .update_by_id(&id, doc! { "$set": { "isDefault": false } })
            .await?;
        ensure_default(state, &who.tenant_id).await?;
    } else {
        ensure_default(state, &who.tenant_id).await?;
    }
    reindex_if_changed(state, who, before).await?;
    let stored = load(state, who, &id).await?;
    tracing::info!(tenant_id = %who.tenant_id, provider_id = %id, "ai provider updated");
    Ok(Json((&stored).into()))
}

/// Delete an AI provider (admins; 204). Agents that used it fall back to
/// the tenant's default; deleting the default promotes the oldest
/// remaining active provider.
#[endpoint(tags("ai-providers"), security(("bearerAuth" = [])), status_codes(204, 403, 404), parameters(("id" = String, Path, description = "AI provider id")))]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let id = path_id(req, "AI provider")?;
    let state = app(depot);
    load(state, who, &id).await?;
    let before = embedding_signature(default_provider(state, &who.tenant_id).await?.as_ref());
    state
        .platform
        .db
        .scoped::<AiProvider>(&who.tenant_id)
        .delete_by_id(&id)
        .await?;
    let agents = state.platform.db.scoped::<Agent>(&who.tenant_id);
    while agents
        .update_one(
            doc! { "aiProviderId": &id },
            doc! { "$set": { "aiProviderId": bson::Bson::Null, "updatedAt": bson::DateTime::now() } },
        )
        .await?
        .is_some()
    {}
    ensure_default(state, &who.tenant_id).await?;
    reindex_if_changed(state, who, before).await?;
    tracing::info!(tenant_id = %who.tenant_id, provider_id = %id, "ai provider deleted");
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Check a provider works (admins; 202): a `test_ai_provider` job makes
/// one 1-token chat completion; its result is `{ok, latencyMs, model,
/// error}`.
#[endpoint(tags("ai-providers"), security(("bearerAuth" = [])), status_codes(202, 403, 404), parameters(("id" = String, Path, description = "AI provider id")))]
pub async fn test(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ProviderTestAccepted>> {
    let who = caller(depot)?;
    let id = path_id(req, "AI provider")?;
    let state = app(depot);
    load(state, who, &id).await?;
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            TestAiProvider {
                provider_id: id.clone(),
            },
        )
        .await?;
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(ProviderTestAccepted {
        accepted: (&job).into(),
        status: job.status.as_str().to_owned(),
    }))
}

/// Every route of an AI provider.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("ai-providers").get(list).post(create))
        .push(
            Router::with_path("ai-providers/{id}")
                .get(get)
                .put(update)
                .delete(delete),
        )
        .push(Router::with_path("ai-providers/{id}/test").post(test))
}
