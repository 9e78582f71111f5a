//! The api's one error type and its one mapping to HTTP.
//!
//! Every body is `{"message", "code", "details"}`; the frontend shows
//! `message`. Internal errors are logged with their cause and answered with
//! a generic message.

use salvo::http::StatusCode;
use salvo::http::header::{HeaderValue, RETRY_AFTER};
use salvo::oapi::{self, EndpointOutRegister, ToSchema};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use aigentable_platform::db::DbError;
use aigentable_platform::domain::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } | ApiError::FileTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "VALIDATION_ERROR",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PayloadTooLarge { .. } | ApiError::FileTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::Timeout(_) => "TIMEOUT",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Unprocessable(_) => "UNPROCESSABLE",
            ApiError::TooManyRequests { .. } => "RATE_LIMITED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            ApiError::PayloadTooLarge { limit } => json!({ "limit": limit }),
            ApiError::FileTooLarge { file, limit } => json!({ "file": file, "limit": limit }),
            ApiError::TooManyRequests { retry_after_secs } => {
                json!({ "retryAfter": retry_after_secs })
            }
            // Always an object, as the spec says, so clients never check for null.
            _ => json!({}),
        };
        let message = match self {
            ApiError::Internal(_) => {
                "Something went wrong on our side. Please try again.".to_owned()
            }
            // These start with the field's exact name, e.g. `firstName must not be empty`.
            ApiError::BadRequest { message, .. } => message.clone(),
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
                ApiError::Conflict("a record with this value already exists".to_owned())
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
            aigentable_jobs::EnqueueError::Queue(_) => ApiError::Unavailable(
                "the job queue is unavailable, please retry shortly".to_owned(),
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
    fn register(components: &mut oapi::Components, operation: &mut oapi::Operation) {
        for (code, text) in [
            ("400", "Invalid input; `details.field` names the field"),
            ("401", "Missing, invalid, expired or revoked token"),
            ("403", "Not allowed for this role or tenant"),
            ("404", "Not found (also for ids of other tenants)"),
            ("409", "Conflict with the current state"),
            ("429", "Rate limited; see the Retry-After header"),
            ("500", "Internal error"),
        ] {
            operation.responses.insert(
                code,
                oapi::Response::new(text)
                    .add_content("application/json", ErrorBody::to_schema(components)),
            );
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<aigentable_platform::auth::password::PasswordError> for ApiError {
    fn from(e: aigentable_platform::auth::password::PasswordError) -> Self {
        match e {
            aigentable_platform::auth::password::PasswordError::Busy => ApiError::Unavailable(
                "the server is busy checking passwords; retry in a moment".to_owned(),
            ),
            other => ApiError::internal(other),
        }
    }
}
