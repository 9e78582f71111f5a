//! `/api/v1/tenants`: settings, usage and billing of the caller's tenant
//! (platform administrators see and manage every tenant).

use bson::{Document, doc};
use chrono::Utc;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_platform::domain::{Name, TenantStatus};
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::Tenant;
use aigentable_platform::model::tenant::{DeliveryGuarantee, Tenants};
use aigentable_platform::plans::{Plan, PlanLimits};
use aigentable_platform::usage::{Usage, tenant_usage};

use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, pagination, path_id};
use crate::guard::{Caller, caller};
use crate::state::app;
use crate::views::{Pagination, TenantView};

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
    pub pagination: Pagination,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsPatch {
    /// IANA time zone, e.g. `Europe/Paris`.
    pub timezone: Option<String>,
    /// BCP 47 language tag, e.g. `en` or `pt-BR`.
    pub default_language: Option<String>,
    pub business_hours: Option<String>,
    pub support_email: Option<String>,
    /// `atLeastOnce` or `atMostOnce`: what a reply whose send was
    /// interrupted becomes (sent again, or failed and handed to staff).
    pub delivery_guarantee: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTenantRequest {
    pub name: Option<String>,
    pub settings: Option<SettingsPatch>,
    /// Platform administrators only.
    pub plan: Option<String>,
    /// Platform administrators only: `ACTIVE` or `SUSPENDED`.
    #[salvo(schema(value_type = Option<String>))]
    pub status: Option<TenantStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub tenant_id: String,
    #[salvo(schema(value_type = Object))]
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingView {
    pub tenant_id: String,
    #[salvo(schema(value_type = Object))]
    pub plan: Plan,
    #[salvo(schema(value_type = Object))]
    pub usage: Usage,
    /// Names of the limits the tenant is over, e.g. `users`.
    pub over_limit: Vec<String>,
    #[salvo(schema(value_type = Object))]
    pub limits: PlanLimits,
}

/// The tenant named in the path, if the caller may act on it; 404 otherwise.
fn target_tenant(req: &Request, who: &Caller) -> ApiResult<TenantId> {
    let id = path_id(req, "tenant")?;
    if who.is_super_admin() || id == who.tenant_id.as_str() {
        Ok(TenantId::from_trusted(id))
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

async fn load(depot: &Depot, id: &TenantId) -> ApiResult<Tenant> {
    Tenants(&app(depot).platform.db)
        .get(id)
        .await?
        .ok_or(ApiError::NotFound("tenant"))
}

/// The caller's tenant (admins); platform administrators get every tenant.
#[endpoint(tags("tenants"), security(("bearerAuth" = [])), parameters(
    ("page" = Option<u64>, Query, description = "Page number, from 1"),
    ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
))]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<TenantList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let (tenants, total) = if who.is_super_admin() {
        Tenants(&app(depot).platform.db).list_all(page).await?
    } else {
        (vec![load(depot, &who.tenant_id).await?], 1)
    };
    Ok(Json(TenantList {
        tenants: tenants.iter().map(TenantView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// One tenant.
#[endpoint(tags("tenants"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Tenant id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<TenantView>> {
    let who = caller(depot)?;
    let id = target_tenant(req, who)?;
    Ok(Json((&load(depot, &id).await?).into()))
}

fn valid_language(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Update the tenant's name and settings (admins); plan and status
/// (platform administrators).
#[endpoint(tags("tenants"), security(("bearerAuth" = [])), request_body = UpdateTenantRequest, parameters(("id" = String, Path, description = "Tenant id")))]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<TenantView>> {
    let body: UpdateTenantRequest = json_body(req).await?;
    let who = caller(depot)?;
    let id = target_tenant(req, who)?;
    let current = load(depot, &id).await?;
    let platform = &app(depot).platform;

    let mut set = Document::new();
    if let Some(name) = &body.name {
        set.insert("name", Name::parse("name", name, 120)?.into_inner());
    }
    if let Some(settings) = &body.settings {
        if let Some(tz) = &settings.timezone {
            let tz = tz.trim();
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(ApiError::field(
                    "settings.timezone",
                    format!("'{tz}' is not an IANA time zone"),
                ));
            }
            set.insert("settings.timezone", tz);
        }
        if let Some(lang) = &settings.default_language {
            let lang = lang.trim();
            if !valid_language(lang) {
                return Err(ApiError::field(
                    "settings.defaultLanguage",
                    format!("'{lang}' is not a language tag"),
                ));
            }
            set.insert("settings.defaultLanguage", lang);
        }
        if let Some(hours) = &settings.business_hours {
            set.insert(
                "settings.businessHours",
                Name::parse("settings.businessHours", hours, 200)?.into_inner(),
            );
        }
        if let Some(email) = &settings.support_email {
            let email = aigentable_platform::domain::Email::parse("settings.supportEmail", email)?;
            set.insert("settings.supportEmail", email.as_str());
        }
        if let Some(raw) = &settings.delivery_guarantee {
            let Some(guarantee) = DeliveryGuarantee::parse(raw.trim()) else {
                return Err(ApiError::field(
                    "settings.deliveryGuarantee",
                    format!("'{raw}' is not atLeastOnce or atMostOnce"),
                ));
            };
            set.insert("settings.deliveryGuarantee", guarantee.as_str());
        }
    }
    if body.plan.is_some() || body.status.is_some() {
        who.require_super_admin()?;
    }
    if let Some(plan) = &body.plan {
        if !platform.config.plans.contains_key(plan) {
            return Err(ApiError::field(
                "plan",
                format!("'{plan}' is not a defined plan"),
            ));
        }
        set.insert("plan", plan.as_str());
    }
    if let Some(status) = body.status {
        set.insert(
            "status",
            match status {
                TenantStatus::Active => "ACTIVE",
                TenantStatus::Suspended => "SUSPENDED",
            },
        );
    }
    if set.is_empty() {
        return Ok(Json((&current).into()));
    }
    let updated = Tenants(&platform.db)
        .update(&id, set)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    tracing::info!(tenant_id = %id, "tenant updated");
    if current.status != updated.status {
        let state = app(depot);
        if updated.status == TenantStatus::Suspended {
            crate::realtime_sessions::revoke(
                state,
                aigentable_platform::auth::revocation::SessionScope::Tenant {
                    tenant_id: id.to_string(),
                },
                aigentable_platform::auth::revocation::reasons::TENANT_SUSPENDED,
            )
            .await;
        } else {
            // What arrived while suspended is answered now.
            match aigentable_jobs::held::release(&state.jobs, &platform.db, &id).await {
                Ok(n) => tracing::info!(tenant_id = %id, released = n, "tenant reactivated"),
                Err(e) => {
                    tracing::warn!(tenant_id = %id, error = %e, "held work not released now; the sweep retries")
                }
            }
        }
    }
    Ok(Json((&updated).into()))
}

/// Usage in the current billing period, from real counts.
#[endpoint(tags("tenants"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Tenant id")))]
pub async fn get_usage(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<UsageView>> {
    let who = caller(depot)?;
    let id = target_tenant(req, who)?;
    load(depot, &id).await?;
    let usage = tenant_usage(&app(depot).platform.db, &id, Utc::now()).await?;
    Ok(Json(UsageView {
        tenant_id: id.to_string(),
        usage,
    }))
}

/// The tenant's plan, its limits and usage against them (admins).
#[endpoint(tags("tenants"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Tenant id")))]
pub async fn get_billing(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<BillingView>> {
    let who = caller(depot)?;
    let id = target_tenant(req, who)?;
    let tenant = load(depot, &id).await?;
    let platform = &app(depot).platform;
    let plan = platform.config.plan(&tenant.plan).clone();
    let usage = tenant_usage(&platform.db, &id, Utc::now()).await?;
    let l = &plan.limits;
    let over_limit = [
        ("users", usage.users, l.users),
        ("agents", usage.agents, l.agents),
        ("channels", usage.channels, l.channels),
        ("documents", usage.documents, l.documents),
        ("storageBytes", usage.storage_bytes, l.storage_bytes),
        (
            "conversations",
            usage.conversations,
            l.conversations_per_month,
        ),
        ("messages", usage.messages, l.messages_per_month),
        ("llmTokens", usage.llm_tokens, l.llm_tokens_per_month),
    ]
    .into_iter()
    .filter(|(_, used, limit)| used > limit)
    .map(|(name, _, _)| name.to_owned())
    .collect();
    Ok(Json(BillingView {
        tenant_id: id.to_string(),
        limits: plan.limits.clone(),
        plan,
        usage,
        over_limit,
    }))
}

/// Every route of a tenant.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("tenants").get(list))
        .push(Router::with_path("tenants/{id}").get(get).put(update))
        .push(Router::with_path("tenants/{id}/usage").get(get_usage))
        .push(Router::with_path("tenants/{id}/billing").get(get_billing))
}
