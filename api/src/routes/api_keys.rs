//! `/api/v1/api-keys`: keys a tenant admin makes for the tenant's own apps,
//! and the authentication of requests that carry one.
//!
//! - The secret is answered once, by `POST`; only its keyed hash, prefix
//!   and last four characters are stored (see `aigentable_platform::api_keys`).
//! - A key acts for the admin who made it, never above `TENANT_ADMIN`, and
//!   only on routes whose row in [`crate::policy::ROUTES`] names a scope the
//!   key holds. Routes without a scope (accounts, users, keys, tenants, AI
//!   providers, the platform) refuse every key.
//! - `DELETE` marks the key revoked in MongoDB, which every request with the
//!   key reads, so every api replica refuses it from the next request on.

use std::collections::BTreeSet;

use bson::doc;
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_platform::api_keys::{self, ApiKey};
use aigentable_platform::domain::{Name, Role, TenantStatus, UserStatus};
use aigentable_platform::ids::{UserId, new_id};
use aigentable_platform::model::User;
use aigentable_platform::model::tenant::Tenants;

use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body, pagination, path_id};
use crate::guard::{Caller, caller};
use crate::policy::{Access, RoutePolicy};
use crate::state::{AppState, app};
use crate::views::Pagination;

/// Scopes no route needs yet but that clients may ask for (the guide's
/// example asks for `messages:read`; conversation reads, which include
/// their messages, need `conversations:read`).
const RESERVED_SCOPES: &[&str] = &["messages:read"];

/// Every scope a key may hold: those of the routes table, and the reserved.
pub fn known_scopes() -> BTreeSet<&'static str> {
    crate::policy::ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::Role(_)))
        .filter_map(|r| r.scope)
        .chain(RESERVED_SCOPES.iter().copied())
        .collect()
}

/// What a request authenticated by a key may do.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub id: String,
    pub permissions: Vec<String>,
    /// Requests per hour.
    pub rate_limit: u32,
}

/// The key a request carries: `X-API-Key`, or `Authorization: Bearer ak_...`.
pub fn presented_key(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get("x-api-key") {
        return Some(v.to_str().map(str::trim).unwrap_or(""));
    }
    crate::guard::bearer_token(req).filter(|t| t.starts_with("ak_"))
}

/// Checks a presented key and the tenant the request names.
pub async fn authenticate_key(
    state: &AppState,
    key: &str,
    tenant_header: Option<&str>,
    header_present: bool,
) -> Result<Caller, ApiError> {
    let invalid = || ApiError::Unauthorized("invalid API key".to_owned());
    if !api_keys::looks_like_key(key) {
        return Err(invalid());
    }
    let platform = &state.platform;
    let hash = api_keys::hash_key(platform.config.data_encryption_key.expose(), key);
    let stored = api_keys::find_by_hash(&platform.db, &hash)
        .await?
        .ok_or_else(invalid)?;
    if stored.revoked {
        return Err(ApiError::Unauthorized(
            "this API key has been revoked".to_owned(),
        ));
    }
    let now = Utc::now();
    if stored.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::Unauthorized(
            "this API key has expired".to_owned(),
        ));
    }
    match tenant_header {
        None if header_present => {
            return Err(ApiError::Forbidden("invalid X-Tenant-ID header".to_owned()));
        }
        Some(requested) if requested != stored.tenant_id.as_str() => {
            return Err(ApiError::Forbidden(
                "the requested tenant (X-Tenant-ID) does not match the API key's tenant".to_owned(),
            ));
        }
        _ => {}
    }
    let tenant = Tenants(&platform.db)
        .get(&stored.tenant_id)
        .await?
        .ok_or_else(invalid)?;
    if tenant.status == TenantStatus::Suspended {
        return Err(ApiError::Forbidden(
            "this workspace is suspended; contact support".to_owned(),
        ));
    }
    // The key acts for its creator (who may be a platform administrator
    // acting on this tenant), never above a tenant administrator.
    let mut user = platform
        .db
        .unscoped::<User>(aigentable_platform::model::user::COLLECTION)
        .find_one(doc! { "_id": stored.created_by.as_str() })
        .await
        .map_err(aigentable_platform::db::DbError::from)?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "the user who created this API key is no longer active".to_owned(),
            )
        })?;
    if user.role == Role::SuperAdmin {
        user.role = Role::TenantAdmin;
    }
    let db = platform.db.clone();
    let used = stored.clone();
    tokio::spawn(async move {
        if let Err(e) = api_keys::record_use(&db, &used, now).await {
            tracing::warn!(error = %e, api_key_id = %used.id, "api key use not recorded");
        }
    });
    Ok(Caller {
        user,
        tenant_id: stored.tenant_id.clone(),
        jti: String::new(),
        exp: 0,
        plan: tenant.plan,
        api_key: Some(KeyGrant {
            id: stored.id,
            permissions: stored.permissions,
            rate_limit: stored.rate_limit,
        }),
    })
}

/// A key may call a route only when the route has a scope and the key
/// holds it.
pub fn check_scope(caller: &Caller, route: &RoutePolicy) -> Result<(), ApiError> {
    let Some(grant) = &caller.api_key else {
        return Ok(());
    };
    match route.scope {
        None => Err(ApiError::because(
            Reason::KeyNotAllowed,
            "API keys cannot call this route; sign in as a user",
        )),
        Some(scope) if grant.permissions.iter().any(|p| p == scope) => Ok(()),
        Some(scope) => Err(ApiError::because(
            Reason::ScopeRequired,
            format!("this API key lacks the scope \"{scope}\""),
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    /// Requests per hour.
    pub rate_limit: u32,
    pub expires_at: Option<DateTime<Utc>>,
    /// `ak_live_` and the first four random characters.
    pub prefix: String,
    pub last4: String,
    /// For display: `ak_live_abcd...wxyz`.
    pub masked_key: String,
    /// `ACTIVE` or `EXPIRED`.
    pub status: String,
    /// The id of the user who created the key.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Requests made with the key.
    pub usage_count: i64,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        let expired = k.expires_at.is_some_and(|at| at <= Utc::now());
        Self {
            id: k.id.clone(),
            tenant_id: k.tenant_id.to_string(),
            name: k.name.clone(),
            permissions: k.permissions.clone(),
            rate_limit: k.rate_limit,
            expires_at: k.expires_at,
            prefix: k.prefix.clone(),
            last4: k.last4.clone(),
            masked_key: format!("{}...{}", k.prefix, k.last4),
            status: if expired { "EXPIRED" } else { "ACTIVE" }.to_owned(),
            created_by: k.created_by.to_string(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            usage_count: k.usage_count,
        }
    }
}

/// The created key, with its secret: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub api_key: ApiKeyView,
    /// The secret (`ak_live_...`). Store it now: it cannot be shown again.
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
    pub pagination: Pagination,
}

/// `POST /api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInput {
    pub name: String,
    /// Scopes such as `conversations:read`; see the API description for
    /// the list. Unknown scopes are refused.
    pub permissions: Vec<String>,
    /// Requests per hour (default `API_KEY_DEFAULT_RATE_LIMIT`).
    #[salvo(schema(minimum = 1))]
    pub rate_limit: Option<u32>,
    /// When the key stops working; must be in the future. No value: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The tenant's API keys (admins), newest first; revoked keys are gone.
#[endpoint(
    tags("api-keys"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<ApiKeyList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let (items, total) = app(depot)
        .platform
        .db
        .scoped::<ApiKey>(&who.tenant_id)
        .find_page(
            doc! { "revoked": false },
            doc! { "createdAt": -1, "_id": -1 },
            page,
        )
        .await?;
    Ok(Json(ApiKeyList {
        api_keys: items.iter().map(ApiKeyView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// Create an API key (admins; 201). The answer's `key` is the secret,
/// shown this once.
#[endpoint(tags("api-keys"), security(("bearerAuth" = [])), request_body = ApiKeyInput, status_codes(201, 400, 403))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<ApiKeyCreated>> {
    let input: ApiKeyInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    let name = Name::parse("name", &input.name, 100)?.into_inner();
    let permissions = parse_permissions(&input.permissions)?;
    let limits = &state.platform.config.rate_limits;
    let rate_limit = match input.rate_limit {
        None => limits.key_default_per_hour,
        Some(n) if (1..=limits.key_max_per_hour).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::field(
                "rateLimit",
                format!(
                    "must be between 1 and {} requests per hour",
                    limits.key_max_per_hour
                ),
            ));
        }
    };
    let now = Utc::now();
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::field("expiresAt", "must be in the future"));
    }
    let fresh = api_keys::generate(state.platform.config.data_encryption_key.expose());
    let key = ApiKey {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        name,
        permissions,
        rate_limit,
        expires_at: input.expires_at,
        prefix: fresh.prefix,
        last4: fresh.last4,
        key_hash: fresh.key_hash,
        created_by: UserId::from_trusted(who.user_id().as_str()),
        created_at: now,
        last_used_at: None,
        usage_count: 0,
        revoked: false,
        revoked_at: None,
    };
    state
        .platform
        .db
        .scoped::<ApiKey>(&who.tenant_id)
        .insert(&key)
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, api_key_id = %key.id, user_id = %who.user_id(), "api key created");
    res.status_code(StatusCode::CREATED);
    Ok(Json(ApiKeyCreated {
        api_key: (&key).into(),
        key: fresh.secret,
    }))
}

fn parse_permissions(raw: &[String]) -> ApiResult<Vec<String>> {
    if raw.is_empty() {
        return Err(ApiError::field(
            "permissions",
            "must name at least one scope",
        ));
    }
    if raw.len() > 100 {
        return Err(ApiError::field(
            "permissions",
            "must name at most 100 scopes",
        ));
    }
    let known = known_scopes();
    let mut unknown: Vec<&str> = raw
        .iter()
        .map(String::as_str)
        .filter(|s| !known.contains(s))
        .collect();
    unknown.dedup();
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest {
            message: format!("permissions has unknown scopes: {}", unknown.join(", ")),
            details: serde_json::json!({
                "field": "permissions",
                "unknown": unknown,
                "allowed": known,
            }),
        });
    }
    let mut scopes: Vec<String> = raw.to_vec();
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes)
}

/// Revoke an API key (admins; 204): every api replica refuses it from the
/// next request on.
#[endpoint(tags("api-keys"), security(("bearerAuth" = [])), status_codes(204, 403, 404), parameters(("id" = String, Path, description = "API key id")))]
pub async fn revoke(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let id = path_id(req, "API key")?;
    let revoked = app(depot)
        .platform
        .db
        .scoped::<ApiKey>(&who.tenant_id)
        .update_one(
            doc! { "_id": &id, "revoked": false },
            doc! { "$set": { "revoked": true, "revokedAt": bson::DateTime::now() } },
        )
        .await?;
    if revoked.is_none() {
        return Err(ApiError::NotFound("API key"));
    }
    tracing::info!(tenant_id = %who.tenant_id, api_key_id = %id, user_id = %who.user_id(), "api key revoked");
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Every route of an API key.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("api-keys").get(list).post(create))
        .push(Router::with_path("api-keys/{id}").delete(revoke))
}
