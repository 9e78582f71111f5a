//! The api's one error type and its one mapping to HTTP.
//!
//! Every body is `{"message", "code", "details"}`; the frontend shows
//! `message`. `code` is the broad class the frontend already knows
//! (`VALIDATION_ERROR`, `CONFLICT`, ...); `details.reason` the stable cause
//! (`last_admin`, `invalid_transition`, ...), both from the one [`reasons!`]
//! table, which also lists the statuses in the OpenAPI spec. Internal
//! errors are logged with their cause and answered with a generic message.

use salvo::http::StatusCode;
use salvo::http::header::{HeaderValue, RETRY_AFTER};
use salvo::oapi::{self, EndpointOutRegister, ToSchema};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use aigentable_platform::db::DbError;
use aigentable_platform::domain::ParseError;

/// The one table of causes: `Variant => STATUS, "CODE", "reason"`. A
/// cause is added here, and nowhere else, to get its status, its code and
/// its place in the OpenAPI spec.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $status:ident, $code:literal, $reason:literal;)*) => {
        /// Why a request failed: `details.reason` of every error body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn status(self) -> StatusCode {
                match self {
                    $(Reason::$variant => StatusCode::$status,)*
                }
            }

            /// The broad class the frontend knows.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// Stable and specific: `details.reason`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $reason,)*
                }
            }
        }
    };
}

reasons! {
    /// `details.field` names the field.
    InvalidField => BAD_REQUEST, "VALIDATION_ERROR", "invalid_field";
    /// Malformed JSON, a wrong type, an unknown enum value.
    InvalidBody => BAD_REQUEST, "VALIDATION_ERROR", "invalid_body";
    /// A one-time token (reset, email verification) that is unknown, used or expired.
    InvalidToken => BAD_REQUEST, "VALIDATION_ERROR", "invalid_token";
    Unauthenticated => UNAUTHORIZED, "UNAUTHORIZED", "unauthenticated";
    /// The session ended: logged out, expired, or the password changed.
    SessionEnded => UNAUTHORIZED, "UNAUTHORIZED", "session_ended";
    BadCredentials => UNAUTHORIZED, "UNAUTHORIZED", "bad_credentials";
    /// A webhook or widget request whose signature does not verify.
    BadSignature => UNAUTHORIZED, "UNAUTHORIZED", "bad_signature";
    /// The caller's role may not do this.
    RoleRequired => FORBIDDEN, "FORBIDDEN", "role_required";
    /// The API key does not hold the route's scope.
    ScopeRequired => FORBIDDEN, "FORBIDDEN", "scope_required";
    /// A route API keys can never call (users, keys, tenants, system).
    KeyNotAllowed => FORBIDDEN, "FORBIDDEN", "key_not_allowed";
    /// `X-Tenant-ID` names another tenant.
    WrongTenant => FORBIDDEN, "FORBIDDEN", "wrong_tenant";
    AccountInactive => FORBIDDEN, "FORBIDDEN", "account_inactive";
    TenantSuspended => FORBIDDEN, "FORBIDDEN", "tenant_suspended";
    /// A website origin the widget's channel does not allow.
    OriginNotAllowed => FORBIDDEN, "FORBIDDEN", "origin_not_allowed";
    Forbidden => FORBIDDEN, "FORBIDDEN", "forbidden";
    NotFound => NOT_FOUND, "NOT_FOUND", "not_found";
    /// A unique value (an email, a provider account) is taken.
    Duplicate => CONFLICT, "CONFLICT", "duplicate";
    /// The tenant would be left without an active administrator.
    LastAdmin => CONFLICT, "CONFLICT", "last_admin";
    /// A status change the object's life cycle does not allow.
    InvalidTransition => CONFLICT, "CONFLICT", "invalid_transition";
    /// The same work is already under way.
    AlreadyRunning => CONFLICT, "CONFLICT", "already_running";
    Conflict => CONFLICT, "CONFLICT", "conflict";
    BodyTooLarge => PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "body_too_large";
    FileTooLarge => PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "file_too_large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type";
    /// A file whose content is not what its name says.
    FileTypeMismatch => UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "file_type_mismatch";
    Unprocessable => UNPROCESSABLE_ENTITY, "UNPROCESSABLE", "unprocessable";
    RateLimited => TOO_MANY_REQUESTS, "RATE_LIMITED", "rate_limited";
    /// The tenant's plan allows no more: `details` names the limit, its value and the usage.
    PlanLimit => PAYMENT_REQUIRED, "PLAN_LIMIT_EXCEEDED", "plan_limit";
    Internal => INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal";
    /// Redis did not take the job; retrying shortly works.
    QueueUnavailable => SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "queue_unavailable";
    /// Too much work at once (password hashing); retrying shortly works.
    Busy => SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "busy";
    Unavailable => SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "unavailable";
    /// A worker did not answer in time; the job goes on.
    Timeout => GATEWAY_TIMEOUT, "TIMEOUT", "timeout";
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A specific cause from the [`Reason`] table.
    #[error("{message}")]
    Because {
        reason: Reason,
        message: String,
        details: Value,
    },
    #[error("{message}")]
    BadRequest { message: String, details: Value },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("\"{file}\" is larger than the {} MB limit per file", limit / (1024 * 1024))]
    FileTooLarge { file: String, limit: usize },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many requests, retry in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    /// The tenant's plan allows no more (402; see `crate::plan_limits`).
    #[error("your plan allows {value} {limit}; {usage} are in use")]
    PlanLimit {
        limit: &'static str,
        value: u64,
        usage: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable, shown by the frontend.
    pub message: String,
    /// Stable machine-readable code, e.g. `VALIDATION_ERROR`.
    pub code: String,
    /// Extra information such as the offending `field`.
    #[salvo(schema(value_type = Object))]
    pub details: Value,
}

impl ApiError {
    pub fn field(field: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::BadRequest {
            message: format!("{field} {reason}"),
            details: json!({ "field": field }),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    /// An error with a specific cause from the [`Reason`] table.
    pub fn because(reason: Reason, message: impl Into<String>) -> Self {
        ApiError::Because {
            reason,
            message: message.into(),
            details: json!({}),
        }
    }

    /// The cause: the specific one when given, else the class's general one.
    pub fn reason(&self) -> Reason {
        match self {
            ApiError::Because { reason, .. } => *reason,
            ApiError::BadRequest { details, .. } => {
                if details.get("field").is_some() {
                    Reason::InvalidField
                } else {
                    Reason::InvalidBody
                }
            }
            ApiError::Unauthorized(_) => Reason::Unauthenticated,
            ApiError::Forbidden(_) => Reason::Forbidden,
            ApiError::NotFound(_) => Reason::NotFound,
            ApiError::Conflict(_) => Reason::Conflict,
            ApiError::PayloadTooLarge { .. } => Reason::BodyTooLarge,
            ApiError::FileTooLarge { .. } => Reason::FileTooLarge,
            ApiError::Timeout(_) => Reason::Timeout,
            ApiError::UnsupportedMediaType(_) => Reason::UnsupportedMediaType,
            ApiError::Unprocessable(_) => Reason::Unprocessable,
            ApiError::TooManyRequests { .. } => Reason::RateLimited,
            ApiError::PlanLimit { .. } => Reason::PlanLimit,
            ApiError::Unavailable(_) => Reason::Unavailable,
            ApiError::Internal(_) => Reason::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.reason().status()
    }

    pub fn code(&self) -> &'static str {
        self.reason().code()
    }

    pub fn body(&self) -> ErrorBody {
        let mut details = match self {
            ApiError::Because { details, .. } | ApiError::BadRequest { details, .. } => {
                details.clone()
            }
            ApiError::PayloadTooLarge { limit } => json!({ "limit": limit }),
            ApiError::FileTooLarge { file, limit } => json!({ "file": file, "limit": limit }),
            ApiError::TooManyRequests { retry_after_secs } => {
                json!({ "retryAfter": retry_after_secs })
            }
            ApiError::PlanLimit {
                limit,
                value,
                usage,
            } => json!({ "limit": limit, "value": value, "usage": usage }),
            // Always an object, as the spec says, so clients never check for null.
            _ => json!({}),
        };
        if let Value::Object(map) = &mut details {
            map.insert("reason".into(), self.reason().as_str().into());
        }
        let message = match self {
            ApiError::Internal(_) => {
                "Something went wrong on our side. Please try again.".to_owned()
            }
            // These start with the field's exact name, e.g. `firstName must not be empty`.
            ApiError::BadRequest { message, .. } => message.clone(),
            ApiError::Because {
                reason, message, ..
            } if reason.status() == StatusCode::BAD_REQUEST => message.clone(),
            other => {
                let text = other.to_string();
                // Capitalised like the rest of the UI's messages.
                let mut chars = text.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => text,
                }
            }
        };
        ErrorBody {
            message,
            code: self.code().to_owned(),
            details,
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::field(e.field, e.reason)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Duplicate => {
                ApiError::because(Reason::Duplicate, "a record with this value already exists")
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::Internal(format!("redis: {e}"))
    }
}

impl From<aigentable_jobs::EnqueueError> for ApiError {
    fn from(e: aigentable_jobs::EnqueueError) -> Self {
        match e {
            aigentable_jobs::EnqueueError::Queue(_) => ApiError::because(
                Reason::QueueUnavailable,
                "the job queue is unavailable, please retry shortly",
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// `Retry-After` of a 503: a dependency (MongoDB, Redis) is briefly away.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

pub fn write_error(err: &ApiError, res: &mut Response) {
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = %cause, "request failed");
    }
    let retry_after = match err {
        ApiError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
        // Webhook providers and clients retry a 503 after this.
        ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
        _ => None,
    };
    if let Some(secs) = retry_after
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        res.headers_mut().insert(RETRY_AFTER, value);
    }
    res.status_code(err.status());
    res.render(Json(err.body()));
}

#[async_trait]
impl Writer for ApiError {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        write_error(&self, res);
    }
}

impl EndpointOutRegister for ApiError {
    /// Every status of the [`Reason`] table, each with the reasons it
    /// carries; an endpoint's `status_codes(...)` keeps the ones it answers.
    fn register(components: &mut oapi::Components, operation: &mut oapi::Operation) {
        let mut statuses: Vec<StatusCode> = Reason::ALL.iter().map(|r| r.status()).collect();
        statuses.sort_by_key(|s| s.as_u16());
        statuses.dedup();
        for status in statuses {
            let reasons: Vec<&str> = Reason::ALL
                .iter()
                .filter(|r| r.status() == status)
                .map(|r| r.as_str())
                .collect();
            let text = format!(
                "{}; `details.reason` is one of: {}",
                status_text(status),
                reasons.join(", ")
            );
            operation.responses.insert(
                status.as_str(),
                oapi::Response::new(text)
                    .add_content("application/json", ErrorBody::to_schema(components)),
            );
        }
    }
}

fn status_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Invalid input; `details.field` names the field",
        401 => "Missing, invalid, expired or revoked token",
        403 => "Not allowed for this role or tenant",
        404 => "Not found (also for ids of other tenants)",
        409 => "Conflict with the current state",
        413 => "Body or file too large; `details.limit` gives the limit in bytes",
        402 => {
            "The tenant's plan allows no more; `details` names the limit, its value and the usage"
        }
        415 => "Content type or file type not accepted",
        422 => "Well-formed but cannot be processed",
        429 => "Rate limited; see the Retry-After header",
        503 => "Temporarily unavailable; retry shortly",
        504 => "A worker did not answer in time; the job goes on",
        _ => "Internal error",
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<aigentable_platform::auth::password::PasswordError> for ApiError {
    fn from(e: aigentable_platform::auth::password::PasswordError) -> Self {
        match e {
            aigentable_platform::auth::password::PasswordError::Busy => ApiError::because(
                Reason::Busy,
                "the server is busy checking passwords; retry in a moment",
            ),
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{ApiError, Reason};

    #[test]
    fn every_reason_is_unique_and_lands_in_the_body() {
        let names: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names.len(),
            Reason::ALL.len(),
            "a reason string is used twice"
        );
        for reason in Reason::ALL {
            let body = ApiError::because(*reason, "why").body();
            assert_eq!(body.details["reason"], reason.as_str());
            assert_eq!(body.code, reason.code());
            assert!(reason.status().is_client_error() || reason.status().is_server_error());
        }
        let field = ApiError::field("email", "is required").body();
        assert_eq!(field.details["reason"], "invalid_field");
        assert_eq!(field.details["field"], "email");
    }
}
