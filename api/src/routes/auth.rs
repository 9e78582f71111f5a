//! `/api/v1/auth/*`: register, login, logout, me, forgot/reset password,
//! email verification.

use bson::doc;
use chrono::{Duration, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::types::SendEmail;
use aigentable_jobs::{JobClient, Requester};
use aigentable_platform::auth::rate_limit::{self, Decision};
use aigentable_platform::auth::revocation::{self, SessionScope, reasons};
use aigentable_platform::crypto::{random_token, sha256_hex};
use aigentable_platform::domain::{Email, Name, NewPassword, Role, TenantStatus, UserStatus};
use aigentable_platform::model::tenant::Tenants;
use aigentable_platform::model::{EmailVerification, PasswordReset, Tenant, User, user};
use aigentable_platform::{Platform, db::DbError};

use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::json_body;
use crate::guard::caller;
use crate::state::app;
use crate::views::{MessageView, TenantView, UserView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    /// Creates a new tenant with this name; the user becomes its `TENANT_ADMIN`.
    /// Without it, a workspace named after the user is created.
    pub tenant_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    pub user: UserView,
    pub tenant: TenantRef,
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: UserView,
    pub tenant: TenantRef,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub tenant: TenantView,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotPasswordRequest {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    /// The token from the reset email.
    pub token: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyEmailRequest {
    /// The token from the verification email.
    pub token: String,
}

/// The address rate limits count against: the peer, or with
/// `TRUSTED_PROXIES` the right-most `X-Forwarded-For` hop that is not one
/// of our proxies.
pub fn client_ip(req: &Request, proxies: &[aigentable_platform::IpNet]) -> String {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    aigentable_platform::auth::client_ip::client_ip(req.remote_addr().ip(), forwarded, proxies)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn limited(decision: Decision) -> Result<(), ApiError> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs } => {
            Err(ApiError::TooManyRequests { retry_after_secs })
        }
    }
}

/// Register a user; with `tenantName` a new tenant is created.
#[endpoint(tags("auth"), request_body = RegisterRequest, status_codes(201, 400, 409, 429, 503))]
pub async fn register(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<RegisterResponse>> {
    let body: RegisterRequest = json_body(req).await?;
    let state = app(depot);
    let platform = &state.platform;
    let limits = &platform.config.login_limits;
    let ip = client_ip(req, &platform.config.trusted_proxies);
    limited(
        rate_limit::hit(
            &platform.kv,
            &format!("register:ip:{ip}"),
            limits.registrations_per_ip,
            limits.window_seconds,
        )
        .await?,
    )?;

    let email = Email::parse("email", &body.email)?;
    let password = NewPassword::parse("password", &body.password)?;
    let first_name = Name::parse("firstName", &body.first_name, 100)?.into_inner();
    let last_name = Name::parse("lastName", &body.last_name, 100)?.into_inner();
    let tenant_name = match &body.tenant_name {
        Some(name) => Name::parse("tenantName", name, 120)?.into_inner(),
        None => format!("{first_name}'s workspace"),
    };

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
    let tenant = Tenant::new(tenant_name, platform.config.default_plan.clone());
    Tenants(&platform.db).insert(&tenant).await?;
    let new_user = User::new(
        tenant.id.clone(),
        email,
        hash,
        first_name,
        last_name,
        Role::TenantAdmin,
    );
    if let Err(e) = platform
        .db
        .scoped::<User>(&tenant.id)
        .insert(&new_user)
        .await
    {
        // Do not leave an empty tenant behind when the email raced another sign-up.
        let _ = Tenants(&platform.db).delete(&tenant.id).await;
        return Err(match e {
            DbError::Duplicate => ApiError::because(
                Reason::Duplicate,
                "an account with this email already exists",
            ),
            other => other.into(),
        });
    }
    let (token, _) = platform
        .tokens
        .issue(&new_user.id, &tenant.id, new_user.role)
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %new_user.id, tenant_id = %tenant.id, "user registered");
    res.status_code(StatusCode::CREATED);
    Ok(Json(RegisterResponse {
        user: (&new_user).into(),
        tenant: TenantRef {
            id: tenant.id.to_string(),
            name: tenant.name,
        },
        token,
    }))
}

/// Log in with email and password.
#[endpoint(tags("auth"), request_body = LoginRequest, status_codes(200, 400, 401, 403, 429, 503))]
pub async fn login(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<LoginResponse>> {
    let body: LoginRequest = json_body(req).await?;
    let state = app(depot);
    let platform = &state.platform;
    let limits = &platform.config.login_limits;
    let ip = client_ip(req, &platform.config.trusted_proxies);
    let email_raw = body.email.trim().to_lowercase();
    if email_raw.is_empty() {
        return Err(ApiError::field("email", "is required"));
    }
    if body.password.is_empty() {
        return Err(ApiError::field("password", "is required"));
    }
    // Every attempt is counted before the password is checked, so parallel
    // guesses cannot all slip under the limit; a success gives its count
    // back, so that a busy office behind one address can log in all day.
    let email_bucket = format!("login:email:{}", sha256_hex(&email_raw));
    let ip_bucket = format!("login:ip:{ip}");
    let by_email = rate_limit::hit(
        &platform.kv,
        &email_bucket,
        limits.per_email,
        limits.window_seconds,
    )
    .await?;
    let by_ip = rate_limit::hit(
        &platform.kv,
        &ip_bucket,
        limits.per_ip,
        limits.window_seconds,
    )
    .await?;
    limited(by_email)?;
    limited(by_ip)?;

    let invalid = || ApiError::because(Reason::BadCredentials, "invalid email or password");
    let found = match Email::parse("email", &email_raw) {
        Ok(email) => user::find_by_email_unscoped(&platform.db, &email).await?,
        Err(_) => None,
    };
    let stored_hash = match &found {
        Some(u) => u.password_hash.clone(),
        None => aigentable_platform::auth::password::dummy_hash().await,
    };
    let ok = platform
        .passwords
        .verify(&body.password, &stored_hash)
        .await?;
    let Some(account) = found.filter(|_| ok) else {
        return Err(invalid());
    };
    rate_limit::reset(&platform.kv, &email_bucket).await?;
    rate_limit::give_back(&platform.kv, &ip_bucket).await?;
    if account.status != UserStatus::Active {
        return Err(ApiError::because(
            Reason::AccountInactive,
            "this account is not active",
        ));
    }
    let tenant = Tenants(&platform.db)
        .get(&account.tenant_id)
        .await?
        .ok_or_else(|| ApiError::internal("user without tenant"))?;
    if tenant.status == TenantStatus::Suspended && account.role != Role::SuperAdmin {
        return Err(ApiError::because(
            Reason::TenantSuspended,
            "this workspace is suspended; contact support",
        ));
    }
    let (token, _) = platform
        .tokens
        .issue(&account.id, &account.tenant_id, account.role)
        .map_err(ApiError::internal)?;
    let now = bson::DateTime::now();
    let account = platform
        .db
        .scoped::<User>(&account.tenant_id)
        .update_by_id(account.id.as_str(), doc! { "$set": { "lastLoginAt": now } })
        .await?
        .unwrap_or(account);
    tracing::info!(user_id = %account.id, tenant_id = %account.tenant_id, "user logged in");
    Ok(Json(LoginResponse {
        user: (&account).into(),
        tenant: TenantRef {
            id: tenant.id.to_string(),
            name: tenant.name,
        },
        token,
    }))
}

/// Log out: the token is rejected from now on.
#[endpoint(tags("auth"), security(("bearerAuth" = [])), status_codes(200, 401))]
pub async fn logout(depot: &mut Depot) -> ApiResult<Json<MessageView>> {
    let who = caller(depot)?;
    let state = app(depot);
    revocation::revoke(&state.platform.kv, &who.jti, who.exp).await?;
    crate::realtime_sessions::revoke(
        state,
        SessionScope::Token {
            jti: who.jti.clone(),
        },
        reasons::LOGGED_OUT,
    )
    .await;
    Ok(Json(MessageView::new("Logged out")))
}

/// The current user and their tenant.
#[endpoint(tags("auth"), security(("bearerAuth" = [])), status_codes(200, 401))]
pub async fn me(depot: &mut Depot) -> ApiResult<Json<MeResponse>> {
    let who = caller(depot)?;
    let tenant = Tenants(&app(depot).platform.db)
        .get(&who.tenant_id)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(MeResponse {
        user: (&who.user).into(),
        tenant: (&tenant).into(),
    }))
}

const FORGOT_MESSAGE: &str =
    "If an account exists for this email, a password reset link has been sent.";

/// Request a password reset email. Always answers 200 so that it does not
/// reveal which emails have accounts.
#[endpoint(tags("auth"), request_body = ForgotPasswordRequest, status_codes(200, 400, 429))]
pub async fn forgot_password(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<MessageView>> {
    let body: ForgotPasswordRequest = json_body(req).await?;
    let state = app(depot);
    let platform = &state.platform;
    let limits = &platform.config.login_limits;
    let ip = client_ip(req, &platform.config.trusted_proxies);
    limited(
        rate_limit::hit(
            &platform.kv,
            &format!("forgot:ip:{ip}"),
            limits.per_ip,
            limits.window_seconds,
        )
        .await?,
    )?;
    let email = Email::parse("email", &body.email)?;
    let bucket = format!("forgot:email:{}", sha256_hex(email.as_str()));
    // Quietly drop floods aimed at one mailbox; the answer stays the same.
    if rate_limit::hit(
        &platform.kv,
        &bucket,
        limits.per_email,
        limits.window_seconds,
    )
    .await?
        != Decision::Allowed
    {
        return Ok(Json(MessageView::new(FORGOT_MESSAGE)));
    }
    if let Some(account) = user::find_by_email_unscoped(&platform.db, &email).await?
        && account.status == UserStatus::Active
    {
        send_reset_email(platform, &state.jobs, &account).await?;
    }
    Ok(Json(MessageView::new(FORGOT_MESSAGE)))
}

/// An email carrying a one-time `token`: the job holds the token sealed
/// with the data-encryption key and `text` holds a placeholder for it, so
/// neither the job record nor the queue ever has it in clear.
fn token_email(
    platform: &Platform,
    to: &str,
    purpose: &str,
    subject: &str,
    text: String,
    token: &str,
) -> SendEmail {
    SendEmail {
        to: to.to_owned(),
        subject: subject.to_owned(),
        text,
        purpose: purpose.to_owned(),
        dedupe_key: format!("{purpose}:{}", sha256_hex(token)),
        sealed_token: Some(platform.secrets.seal(token)),
    }
}

async fn send_reset_email(platform: &Platform, jobs: &JobClient, account: &User) -> ApiResult<()> {
    let token = random_token(32);
    let now = Utc::now();
    let reset = PasswordReset {
        token_hash: sha256_hex(&token),
        tenant_id: account.tenant_id.clone(),
        user_id: account.id.clone(),
        expires_at: now + Duration::minutes(platform.config.password_reset_ttl_minutes),
        used_at: None,
        created_at: now,
    };
    platform
        .db
        .scoped::<PasswordReset>(&account.tenant_id)
        .insert(&reset)
        .await?;
    let placeholder = SendEmail::TOKEN_PLACEHOLDER;
    let link = format!(
        "{}/reset-password?token={placeholder}",
        platform.config.app_base_url.trim_end_matches('/')
    );
    let text = format!(
        "Hello {},\n\nUse this link to choose a new password (valid for {} minutes):\n{link}\n\n\
         Or paste this code: {placeholder}\n\nIf you did not ask for this, ignore this email.\n",
        account.first_name, platform.config.password_reset_ttl_minutes
    );
    let email = token_email(
        platform,
        account.email.as_str(),
        "password_reset",
        "Reset your AIgentable password",
        text,
        &token,
    );
    jobs.enqueue(&account.tenant_id, Requester::System, email)
        .await?;
    Ok(())
}

/// Sends a verification link to `new_email`, the user's pending address.
pub(crate) async fn send_verification_email(
    platform: &Platform,
    jobs: &JobClient,
    account: &User,
    new_email: &str,
) -> ApiResult<()> {
    let token = random_token(32);
    let now = Utc::now();
    let verification = EmailVerification {
        token_hash: sha256_hex(&token),
        tenant_id: account.tenant_id.clone(),
        user_id: account.id.clone(),
        email: new_email.to_owned(),
        expires_at: now + Duration::minutes(platform.config.email_verification_ttl_minutes),
        used_at: None,
        created_at: now,
    };
    platform
        .db
        .scoped::<EmailVerification>(&account.tenant_id)
        .insert(&verification)
        .await?;
    let placeholder = SendEmail::TOKEN_PLACEHOLDER;
    let link = format!(
        "{}/verify-email?token={placeholder}",
        platform.config.app_base_url.trim_end_matches('/')
    );
    let text = format!(
        "Hello {},\n\nConfirm that {new_email} is your new AIgentable sign-in address:\n{link}\n\n\
         Or paste this code: {placeholder}\n\nUntil then you keep signing in with {}. \
         If you did not ask for this, ignore this email.\n",
        account.first_name, account.email
    );
    let email = token_email(
        platform,
        new_email,
        "email_verification",
        "Confirm your new AIgentable email",
        text,
        &token,
    );
    jobs.enqueue(&account.tenant_id, Requester::System, email)
        .await?;
    Ok(())
}

/// Set a new password with a reset token. The token works once; every
/// existing session of the user is ended.
#[endpoint(tags("auth"), request_body = ResetPasswordRequest, status_codes(200, 400, 429, 503))]
pub async fn reset_password(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<MessageView>> {
    let body: ResetPasswordRequest = json_body(req).await?;
    let state = app(depot);
    let platform = &state.platform;
    let ip = client_ip(req, &platform.config.trusted_proxies);
    limited(
        rate_limit::hit(
            &platform.kv,
            &format!("reset:ip:{ip}"),
            platform.config.login_limits.per_ip,
            platform.config.login_limits.window_seconds,
        )
        .await?,
    )?;
    let token = body.token.trim();
    if token.is_empty() || token.len() > 200 {
        return Err(ApiError::field("token", "is invalid or has expired"));
    }
    let password = NewPassword::parse("password", &body.password)?;
    let hash = sha256_hex(token);
    let now = bson::DateTime::now();
    // Claim the token atomically so that two concurrent resets cannot both use it.
    let claimed = platform
        .db
        .unscoped::<PasswordReset>(aigentable_platform::model::password_reset::COLLECTION)
        .find_one_and_update(
            doc! { "_id": &hash, "usedAt": null, "expiresAt": { "$gt": now } },
            doc! { "$set": { "usedAt": now } },
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::field("token", "is invalid or has expired"))?;
    let new_hash = platform.passwords.hash(password.expose()).await?;
    let updated = platform
        .db
        .scoped::<User>(&claimed.tenant_id)
        .update_by_id(
            claimed.user_id.as_str(),
            doc! { "$set": { "passwordHash": new_hash, "passwordChangedAt": now, "updatedAt": now } },
        )
        .await?;
    if updated.is_none() {
        return Err(ApiError::field("token", "is invalid or has expired"));
    }
    tracing::info!(user_id = %claimed.user_id, tenant_id = %claimed.tenant_id, "password reset");
    crate::realtime_sessions::revoke(
        state,
        SessionScope::User {
            user_id: claimed.user_id.to_string(),
        },
        reasons::PASSWORD_CHANGED,
    )
    .await;
    Ok(Json(MessageView::new(
        "Your password has been reset. Please log in.",
    )))
}

/// Confirm a new email with the token from the verification email: the
/// address becomes the login and the destination of password resets. The
/// token works once.
#[endpoint(tags("auth"), request_body = VerifyEmailRequest, status_codes(200, 400, 409, 429))]
pub async fn verify_email(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<MessageView>> {
    let body: VerifyEmailRequest = json_body(req).await?;
    let platform = &app(depot).platform;
    let ip = client_ip(req, &platform.config.trusted_proxies);
    limited(
        rate_limit::hit(
            &platform.kv,
            &format!("verify:ip:{ip}"),
            platform.config.login_limits.per_ip,
            platform.config.login_limits.window_seconds,
        )
        .await?,
    )?;
    let token = body.token.trim();
    let invalid = || ApiError::field("token", "is invalid or has expired");
    if token.is_empty() || token.len() > 200 {
        return Err(invalid());
    }
    let now = bson::DateTime::now();
    let claimed = platform
        .db
        .unscoped::<EmailVerification>(aigentable_platform::model::email_verification::COLLECTION)
        .find_one_and_update(
            doc! { "_id": sha256_hex(token), "usedAt": null, "expiresAt": { "$gt": now } },
            doc! { "$set": { "usedAt": now } },
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(invalid)?;
    let email = Email::parse("email", &claimed.email)?;
    if let Some(owner) = user::find_by_email_unscoped(&platform.db, &email).await?
        && owner.id != claimed.user_id
    {
        return Err(ApiError::because(
            Reason::Duplicate,
            "an account with this email already exists",
        ));
    }
    // Only the address still pending: a later change replaced this one.
    let updated = platform
        .db
        .scoped::<User>(&claimed.tenant_id)
        .update_one(
            doc! { "_id": claimed.user_id.as_str(), "pendingEmail": email.as_str() },
            doc! {
                "$set": { "email": email.as_str(), "updatedAt": now },
                "$unset": { "pendingEmail": "" },
            },
        )
        .await
        .map_err(|e| match e {
            DbError::Duplicate => ApiError::because(
                Reason::Duplicate,
                "an account with this email already exists",
            ),
            other => other.into(),
        })?;
    if updated.is_none() {
        return Err(invalid());
    }
    tracing::info!(user_id = %claimed.user_id, tenant_id = %claimed.tenant_id, "email verified and changed");
    Ok(Json(MessageView::new(
        "Your email address is confirmed; use it to sign in from now on.",
    )))
}

/// The routes that need no session: sign up, log in, reset, verify.
pub fn public_router() -> Router {
    Router::new()
        .push(Router::with_path("auth/register").post(register))
        .push(Router::with_path("auth/login").post(login))
        .push(Router::with_path("auth/forgot-password").post(forgot_password))
        .push(Router::with_path("auth/reset-password").post(reset_password))
        .push(Router::with_path("auth/verify-email").post(verify_email))
}

/// The routes of the signed-in session.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("auth/logout").post(logout))
        .push(Router::with_path("auth/me").get(me))
}
