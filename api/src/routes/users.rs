//! `/api/v1/users`: the users of the caller's tenant.

use bson::{Document, doc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_platform::auth::rate_limit::{self, Decision};
use aigentable_platform::auth::revocation::{SessionScope, reasons};
use aigentable_platform::crypto::sha256_hex;
use aigentable_platform::domain::{Email, Name, NewPassword, Role, UserStatus, regex_escape};
use aigentable_platform::model::{User, user};

use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body, pagination, path_id, query_enum, query_string};
use crate::guard::{Caller, caller};
use crate::state::app;
use crate::views::{Pagination, UserView};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    pub pagination: Pagination,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserRequest {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    /// Defaults to `TENANT_USER`.
    #[salvo(schema(value_type = Option<String>))]
    pub role: Option<Role>,
    #[salvo(schema(value_type = Option<String>))]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUserRequest {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Admins only.
    #[salvo(schema(value_type = Option<String>))]
    pub role: Option<Role>,
    /// Admins only.
    #[salvo(schema(value_type = Option<String>))]
    pub status: Option<UserStatus>,
    /// A new password; for another user, admins only.
    pub password: Option<String>,
    /// Your current password: required to change your own password or email.
    pub current_password: Option<String>,
}

fn assignable(who: &Caller, role: Role) -> Result<(), ApiError> {
    if role == Role::SuperAdmin && !who.is_super_admin() {
        return Err(ApiError::Forbidden(
            "only platform administrators can grant SUPER_ADMIN".to_owned(),
        ));
    }
    Ok(())
}

/// Active tenant admins other than `except`.
async fn other_active_admins(depot: &Depot, who: &Caller, except: &str) -> ApiResult<u64> {
    Ok(app(depot)
        .platform
        .db
        .scoped::<User>(&who.tenant_id)
        .count(doc! {
            "_id": { "$ne": except },
            "role": { "$in": [Role::TenantAdmin.as_str(), Role::SuperAdmin.as_str()] },
            "status": UserStatus::Active.as_str(),
        })
        .await?)
}

/// List the tenant's users, newest first.
#[endpoint(
    tags("users"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("search" = Option<String>, Query, description = "Matches email, first or last name"),
        ("role" = Option<String>, Query, description = "SUPER_ADMIN, TENANT_ADMIN or TENANT_USER"),
        ("status" = Option<String>, Query, description = "ACTIVE, INACTIVE or SUSPENDED"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<UserList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let mut filter = Document::new();
    if let Some(search) = query_string(req, "search", 100)? {
        let pattern = regex_escape(&search);
        filter.insert(
            "$or",
            vec![
                doc! { "email": { "$regex": &pattern, "$options": "i" } },
                doc! { "firstName": { "$regex": &pattern, "$options": "i" } },
                doc! { "lastName": { "$regex": &pattern, "$options": "i" } },
            ],
        );
    }
    if let Some(role) = query_enum::<Role>(req, "role", "SUPER_ADMIN, TENANT_ADMIN or TENANT_USER")?
    {
        filter.insert("role", role.as_str());
    }
    if let Some(status) = query_enum::<UserStatus>(req, "status", "ACTIVE, INACTIVE or SUSPENDED")?
    {
        filter.insert("status", status.as_str());
    }
    let (users, total) = app(depot)
        .platform
        .db
        .scoped::<User>(&who.tenant_id)
        .find_page(filter, doc! { "createdAt": -1, "_id": -1 }, page)
        .await?;
    Ok(Json(UserList {
        users: users.iter().map(UserView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// Create a user in the tenant (admins only).
#[endpoint(tags("users"), security(("bearerAuth" = [])), request_body = CreateUserRequest, status_codes(201, 400, 403, 409, 503))]
pub async fn create(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<UserView>> {
    let body: CreateUserRequest = json_body(req).await?;
    let who = caller(depot)?;
    let email = Email::parse("email", &body.email)?;
    let password = NewPassword::parse("password", &body.password)?;
    let first_name = Name::parse("firstName", &body.first_name, 100)?.into_inner();
    let last_name = Name::parse("lastName", &body.last_name, 100)?.into_inner();
    let role = body.role.unwrap_or(Role::TenantUser);
    assignable(who, role)?;
    crate::plan_limits::ensure_room(app(depot), who, crate::plan_limits::Adding::Users(1)).await?;
    let platform = &app(depot).platform;
    if user::find_by_email_unscoped(&platform.db, &email)
        .await?
        .is_some()
    {
        return Err(ApiError::because(
            Reason::Duplicate,
            "an account with this email already exists",
        ));
    }
    let hash = platform.passwords.hash(password.expose()).await?;
    let mut new_user = User::new(
        who.tenant_id.clone(),
        email,
        hash,
        first_name,
        last_name,
        role,
    );
    new_user.status = body.status.unwrap_or(UserStatus::Active);
    platform
        .db
        .scoped::<User>(&who.tenant_id)
        .insert(&new_user)
        .await
        .map_err(|e| match e {
            aigentable_platform::db::DbError::Duplicate => ApiError::because(
                Reason::Duplicate,
                "an account with this email already exists",
            ),
            other => other.into(),
        })?;
    tracing::info!(user_id = %new_user.id, tenant_id = %who.tenant_id, "user created");
    res.status_code(StatusCode::CREATED);
    Ok(Json((&new_user).into()))
}

/// One user of the tenant.
#[endpoint(tags("users"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "User id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<UserView>> {
    let who = caller(depot)?;
    let id = path_id(req, "user")?;
    // Users see their own profile; other people's are administrators' to read.
    if id != who.user_id().as_str() && !who.is_admin() {
        return Err(ApiError::NotFound("user"));
    }
    let found = app(depot)
        .platform
        .db
        .scoped::<User>(&who.tenant_id)
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json((&found).into()))
}

/// Checks the caller's own current password before a change of their
/// password or email. Guesses count against the account's login limit
/// before the check, like logins.
async fn confirm_current_password(
    platform: &aigentable_platform::Platform,
    who: &Caller,
    given: Option<&str>,
) -> ApiResult<()> {
    let Some(given) = given.filter(|p| !p.is_empty()) else {
        return Err(ApiError::field(
            "currentPassword",
            "is required to change your password or email",
        ));
    };
    let limits = &platform.config.login_limits;
    let bucket = format!("login:email:{}", sha256_hex(who.user.email.as_str()));
    if let Decision::Limited { retry_after_secs } = rate_limit::hit(
        &platform.kv,
        &bucket,
        limits.per_email,
        limits.window_seconds,
    )
    .await?
    {
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    if !platform
        .passwords
        .verify(given, &who.user.password_hash)
        .await?
    {
        return Err(ApiError::field("currentPassword", "is incorrect"));
    }
    rate_limit::give_back(&platform.kv, &bucket).await?;
    Ok(())
}

/// Update a user. Users may edit their own name, email and password (the
/// last two with `currentPassword`); only admins change roles, statuses or
/// other users. A new email is not used until it is verified: it is kept
/// as `pendingEmail` and a verification link is sent to it
/// (`POST /auth/verify-email`). A change of password, role or status ends
/// the user's sessions, live sockets included.
#[endpoint(tags("users"), security(("bearerAuth" = [])), request_body = UpdateUserRequest, status_codes(200, 400, 401, 403, 404, 409, 429, 503), parameters(("id" = String, Path, description = "User id")))]
pub async fn update(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<UserView>> {
    let body: UpdateUserRequest = json_body(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "user")?;
    let state = app(depot);
    let platform = &state.platform;
    let users = platform.db.scoped::<User>(&who.tenant_id);
    let target = users
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let is_self = target.id == who.user.id;
    if !is_self {
        who.require_admin()?;
    }
    if target.role == Role::SuperAdmin && !who.is_super_admin() {
        return Err(ApiError::Forbidden(
            "platform administrators can only be changed by their peers".to_owned(),
        ));
    }

    let mut set = Document::new();
    let mut new_email = None;
    if let Some(email) = &body.email {
        let email = Email::parse("email", email)?;
        if email != target.email {
            if user::find_by_email_unscoped(&platform.db, &email)
                .await?
                .is_some()
            {
                return Err(ApiError::because(
                    Reason::Duplicate,
                    "an account with this email already exists",
                ));
            }
            set.insert("pendingEmail", email.as_str());
            new_email = Some(email);
        }
    }
    let new_password = match &body.password {
        Some(raw) => Some(NewPassword::parse("password", raw)?),
        None => None,
    };
    if is_self && (new_email.is_some() || new_password.is_some()) {
        confirm_current_password(platform, who, body.current_password.as_deref()).await?;
    }
    if let Some(name) = &body.first_name {
        set.insert(
            "firstName",
            Name::parse("firstName", name, 100)?.into_inner(),
        );
    }
    if let Some(name) = &body.last_name {
        set.insert("lastName", Name::parse("lastName", name, 100)?.into_inner());
    }
    let new_role = body.role.filter(|r| *r != target.role);
    let new_status = body.status.filter(|s| *s != target.status);
    if new_role.is_some() || new_status.is_some() {
        who.require_admin()?;
    }
    if let Some(role) = new_role {
        assignable(who, role)?;
        set.insert("role", role.as_str());
    }
    if let Some(status) = new_status {
        set.insert("status", status.as_str());
    }
    let loses_admin = target.role.is_admin()
        && target.status == UserStatus::Active
        && (new_role.is_some_and(|r| !r.is_admin())
            || new_status.is_some_and(|s| s != UserStatus::Active));
    if loses_admin && other_active_admins(depot, who, target.id.as_str()).await? == 0 {
        return Err(ApiError::because(
            Reason::LastAdmin,
            "the tenant's last administrator cannot be demoted or deactivated",
        ));
    }
    if let Some(new_password) = &new_password {
        let hash = platform.passwords.hash(new_password.expose()).await?;
        set.insert("passwordHash", hash);
        set.insert("passwordChangedAt", bson::DateTime::now());
    }
    if set.is_empty() {
        return Ok(Json((&target).into()));
    }
    set.insert("updatedAt", bson::DateTime::now());
    let updated = users
        .update_by_id(&id, doc! { "$set": set })
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    tracing::info!(user_id = %updated.id, tenant_id = %who.tenant_id, "user updated");
    if let Some(email) = &new_email {
        crate::routes::auth::send_verification_email(
            platform,
            &state.jobs,
            &updated,
            email.as_str(),
        )
        .await?;
    }
    let ended = if new_status.is_some_and(|s| s != UserStatus::Active) {
        Some(reasons::ACCOUNT_DEACTIVATED)
    } else if new_password.is_some() {
        Some(reasons::PASSWORD_CHANGED)
    } else if new_role.is_some() {
        Some(reasons::ROLE_CHANGED)
    } else {
        None
    };
    if let Some(reason) = ended {
        crate::realtime_sessions::revoke(
            state,
            SessionScope::User {
                user_id: updated.id.to_string(),
            },
            reason,
        )
        .await;
    }
    Ok(Json((&updated).into()))
}

/// Delete a user (admins only). The tenant's last administrator cannot be deleted.
#[endpoint(tags("users"), security(("bearerAuth" = [])), status_codes(204, 403, 404, 409), parameters(("id" = String, Path, description = "User id")))]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let id = path_id(req, "user")?;
    let users = app(depot).platform.db.scoped::<User>(&who.tenant_id);
    let target = users
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if target.role == Role::SuperAdmin && !who.is_super_admin() {
        return Err(ApiError::Forbidden(
            "platform administrators can only be removed by their peers".to_owned(),
        ));
    }
    if target.role.is_admin()
        && target.status == UserStatus::Active
        && other_active_admins(depot, who, target.id.as_str()).await? == 0
    {
        return Err(ApiError::because(
            Reason::LastAdmin,
            "the tenant's last administrator cannot be deleted",
        ));
    }
    if !users.delete_by_id(&id).await? {
        return Err(ApiError::NotFound("user"));
    }
    tracing::info!(user_id = %id, tenant_id = %who.tenant_id, "user deleted");
    crate::realtime_sessions::revoke(
        app(depot),
        SessionScope::User {
            user_id: id.clone(),
        },
        reasons::ACCOUNT_DELETED,
    )
    .await;
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Every route of a tenant's users.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("users").get(list).post(create))
        .push(
            Router::with_path("users/{id}")
                .get(get)
                .put(update)
                .delete(delete),
        )
}
