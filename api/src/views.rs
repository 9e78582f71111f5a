//! JSON shapes returned to the frontend: camelCase, string ids, ISO-8601.

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;

use aigentable_platform::db::PageRequest;
use aigentable_platform::model::{Tenant, TenantSettings, User};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// `SUPER_ADMIN`, `TENANT_ADMIN` or `TENANT_USER`.
    pub role: String,
    /// `ACTIVE`, `INACTIVE` or `SUSPENDED`.
    pub status: String,
    pub tenant_id: String,
    pub last_login_at: Option<DateTime<Utc>>,
    /// A new email waiting for verification (`POST /auth/verify-email`);
    /// `email` stays the login until then.
    pub pending_email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            role: u.role.as_str().to_owned(),
            status: u.status.as_str().to_owned(),
            tenant_id: u.tenant_id.to_string(),
            last_login_at: u.last_login_at,
            pending_email: u.pending_email.clone(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettingsView {
    pub timezone: String,
    pub default_language: String,
    pub business_hours: Option<String>,
    pub support_email: Option<String>,
    /// `atLeastOnce` (default): a reply interrupted around its send is sent
    /// again; `atMostOnce`: it is marked failed and the conversation handed
    /// to staff.
    pub delivery_guarantee: String,
}

impl From<&TenantSettings> for TenantSettingsView {
    fn from(s: &TenantSettings) -> Self {
        Self {
            timezone: s.timezone.clone(),
            default_language: s.default_language.clone(),
            business_hours: s.business_hours.clone(),
            support_email: s.support_email.clone(),
            delivery_guarantee: s.delivery_guarantee.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub plan: String,
    /// `ACTIVE` or `SUSPENDED`.
    pub status: String,
    pub settings: TenantSettingsView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            plan: t.plan.clone(),
            status: match t.status {
                aigentable_platform::domain::TenantStatus::Active => "ACTIVE",
                aigentable_platform::domain::TenantStatus::Suspended => "SUSPENDED",
            }
            .to_owned(),
            settings: (&t.settings).into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub page: u64,
    pub limit: u64,
    pub total: u64,
    pub pages: u64,
}

impl Pagination {
    pub fn new(req: PageRequest, total: u64) -> Self {
        Self {
            page: req.page,
            limit: req.limit,
            total,
            pages: total.div_ceil(req.limit.max(1)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub message: String,
}

impl MessageView {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
