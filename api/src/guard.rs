//! Authentication and tenancy checks for protected routes.
//!
//! A request carries `Authorization: Bearer <jwt>` and optionally
//! `X-Tenant-ID`. The tenant header must match the token's tenant unless
//! the user is a `SUPER_ADMIN`, who may act on any tenant.

use salvo::prelude::*;

use aigentable_platform::auth::{JwtError, revocation};
use aigentable_platform::domain::{Role, TenantStatus, UserStatus};
use aigentable_platform::ids::{TenantId, UserId, looks_like_id};
use aigentable_platform::model::User;
use aigentable_platform::model::tenant::Tenants;

use crate::error::{ApiError, Reason, write_error};
use crate::state::app;

/// The authenticated caller, as stored now (role changes apply at once).
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The tenant this request acts on.
    pub tenant_id: TenantId,
    pub jti: String,
    pub exp: i64,
    /// The tenant's plan (rate limits).
    pub plan: String,
    /// The API key the request came with (`None`: a user's session).
    pub api_key: Option<crate::routes::api_keys::KeyGrant>,
}

impl Caller {
    pub fn user_id(&self) -> &UserId {
        &self.user.id
    }
    pub fn role(&self) -> Role {
        self.user.role
    }
    pub fn is_admin(&self) -> bool {
        self.user.role.is_admin()
    }
    pub fn is_super_admin(&self) -> bool {
        self.user.role == Role::SuperAdmin
    }
    /// Object-level role checks inside a handler (e.g. a field only admins
    /// may set); route-level roles come from [`crate::policy::ROUTES`].
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(Role::TenantAdmin)
    }
    pub fn require_super_admin(&self) -> Result<(), ApiError> {
        self.require(Role::SuperAdmin)
    }
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if crate::policy::allows(self.role(), role) {
            Ok(())
        } else {
            Err(ApiError::because(
                Reason::RoleRequired,
                crate::policy::denial(role),
            ))
        }
    }
}

pub fn caller(depot: &Depot) -> Result<&Caller, ApiError> {
    depot
        .get_typed::<Caller>()
        .map_err(|_| ApiError::Unauthorized("authentication required".to_owned()))
}

pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn authenticate(req: &Request, depot: &Depot) -> Result<Caller, ApiError> {
    let state = app(depot);
    let raw = req.headers().get("x-tenant-id");
    let tenant_header = raw
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(key) = crate::routes::api_keys::presented_key(req) {
        return crate::routes::api_keys::authenticate_key(state, key, tenant_header, raw.is_some())
            .await;
    }
    let token = bearer_token(req)
        .ok_or_else(|| ApiError::Unauthorized("authentication required".to_owned()))?;
    authenticate_token(state, token, tenant_header, raw.is_some()).await
}

/// Shared by HTTP and Socket.IO: verifies a token and the requested tenant.
pub async fn authenticate_token(
    state: &crate::state::AppState,
    token: &str,
    tenant_header: Option<&str>,
    header_present: bool,
) -> Result<Caller, ApiError> {
    let platform = &state.platform;
    let claims = platform.tokens.verify(token).map_err(|e| match e {
        JwtError::Expired => {
            ApiError::because(Reason::SessionEnded, "session expired, please log in again")
        }
        _ => ApiError::Unauthorized("invalid token".to_owned()),
    })?;
    if revocation::is_revoked(&platform.kv, &claims.jti).await? {
        return Err(ApiError::because(
            Reason::SessionEnded,
            "session has been logged out",
        ));
    }
    let token_tenant = claims.tenant_id();
    let user = platform
        .db
        .scoped::<User>(&token_tenant)
        .find_by_id(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("account no longer exists".to_owned()))?;
    if user.status != UserStatus::Active {
        return Err(ApiError::because(
            Reason::SessionEnded,
            "account is not active",
        ));
    }
    // Tokens issued before a password change or reset are void.
    if let Some(changed) = user.password_changed_at
        && claims.iat_ms < changed.timestamp_millis()
    {
        return Err(ApiError::because(
            Reason::SessionEnded,
            "session expired, please log in again",
        ));
    }

    let tenant_id = match tenant_header {
        None if header_present => {
            return Err(ApiError::Forbidden("invalid X-Tenant-ID header".to_owned()));
        }
        None => token_tenant,
        Some(requested) if requested == token_tenant.as_str() => token_tenant,
        Some(requested) if user.role == Role::SuperAdmin => {
            if !looks_like_id(requested) {
                return Err(ApiError::NotFound("tenant"));
            }
            TenantId::from_trusted(requested)
        }
        Some(_) => {
            return Err(ApiError::because(
                Reason::WrongTenant,
                "the requested tenant (X-Tenant-ID) does not match your account's tenant",
            ));
        }
    };
    let tenant = Tenants(&platform.db)
        .get(&tenant_id)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    if tenant.status == TenantStatus::Suspended && user.role != Role::SuperAdmin {
        return Err(ApiError::because(
            Reason::TenantSuspended,
            "this workspace is suspended; contact support",
        ));
    }
    Ok(Caller {
        user,
        tenant_id,
        jti: claims.jti,
        exp: claims.exp,
        plan: tenant.plan,
        api_key: None,
    })
}

/// The router's one access hoop: looks the matched route up in
/// [`crate::policy::ROUTES`], refuses routes missing from it, authenticates
/// non-public ones and checks the caller's role.
#[handler]
pub async fn enforce_policy(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    ctrl: &mut FlowCtrl,
) {
    let Some(policy) = crate::policy::lookup(req.method(), req.matched_path()) else {
        tracing::error!(method = %req.method(), route = req.matched_path(), "route has no access policy; refused");
        write_error(
            &ApiError::Forbidden("this route has no access policy".to_owned()),
            res,
        );
        ctrl.skip_rest();
        return;
    };
    let crate::policy::Access::Role(required) = policy.access else {
        return;
    };
    let outcome = match authenticate(req, depot).await {
        Ok(caller) => crate::routes::api_keys::check_scope(&caller, policy)
            .and_then(|()| {
                if crate::policy::allows(caller.role(), required) {
                    Ok(())
                } else {
                    Err(ApiError::because(
                        Reason::RoleRequired,
                        crate::policy::denial(required),
                    ))
                }
            })
            .map(|()| caller),
        Err(e) => Err(e),
    };
    // Counted once the caller is known to be allowed (refusals cost nothing).
    let outcome = match outcome {
        Ok(caller) => crate::rate_limit::admit(app(depot), &caller, policy, res)
            .await
            .map(|()| caller),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(caller) => {
            tracing::Span::current().record("tenant_id", caller.tenant_id.as_str());
            depot.insert_typed(caller);
        }
        Err(e) => {
            write_error(&e, res);
            ctrl.skip_rest();
        }
    }
}

/// Authentication alone, for a router outside the policy table.
#[handler]
pub async fn require_auth(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    ctrl: &mut FlowCtrl,
) {
    match authenticate(req, depot).await {
        Ok(caller) => {
            tracing::Span::current().record("tenant_id", caller.tenant_id.as_str());
            depot.insert_typed(caller);
        }
        Err(e) => {
            write_error(&e, res);
            ctrl.skip_rest();
        }
    }
}
