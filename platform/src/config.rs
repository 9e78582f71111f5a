//! Process configuration from environment variables.
//!
//! Every process reads the same variables (see `.env.example`); a missing or
//! malformed value stops the process at start with a message naming it.

use std::collections::HashMap;
use std::env;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::plans::{Plan, default_plans};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: Secret<Vec<u8>>,
    pub issuer: String,
    pub audience: String,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failed login attempts allowed from one IP address per window.
    pub per_ip: u32,
    /// Sign-ups allowed from one IP address per window.
    pub registrations_per_ip: u32,
    /// Failed attempts allowed for one email address per window.
    pub per_email: u32,
    pub window_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct SuperAdminSeed {
    pub email: String,
    pub password: Secret<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub mongodb_uri: Secret<String>,
    pub mongodb_db: String,
    pub redis_url: Secret<String>,
    /// Prefix of every Redis key, so that several deployments (or test
    /// runs) can share one Redis without seeing each other's data.
    pub redis_namespace: String,
    pub jwt: JwtConfig,
    pub cors_origins: Vec<String>,
    pub data_encryption_key: Secret<[u8; 32]>,
    pub log_format: LogFormat,
    pub login_limits: LoginLimits,
    pub password_reset_ttl_minutes: i64,
    /// Days a finished job record is kept: SUCCEEDED and CANCELLED
    /// (`JOB_RETENTION_DAYS`), FAILED and DEAD (`JOB_FAILED_RETENTION_DAYS`).
    /// The minute sweep removes older ones.
    pub job_retention_days: i64,
    pub job_failed_retention_days: i64,
    /// Completed backups kept: the newest of each of the last
    /// `BACKUP_KEEP_DAILY` days and of the last `BACKUP_KEEP_WEEKLY` weeks.
    pub backup_keep_daily: usize,
    pub backup_keep_weekly: usize,
    pub app_base_url: String,
    pub smtp_url: Option<Secret<String>>,
    pub email_from: String,
    pub super_admin_seed: Option<SuperAdminSeed>,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`, CIDR
    /// list); empty: the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Password hashes computed at once (`PASSWORD_HASH_CONCURRENCY`).
    pub password_hash_concurrency: usize,
    /// Hash requests allowed to wait for a slot before the api answers 503
    /// (`PASSWORD_HASH_QUEUE`).
    pub password_hash_queue: usize,
    /// How long an email verification link works (`EMAIL_VERIFICATION_TTL_MINUTES`).
    pub email_verification_ttl_minutes: i64,
    pub plans: HashMap<String, Plan>,
    pub default_plan: String,
    pub data_dir: String,
    /// Largest accepted upload, per file.
    pub document_max_bytes: u64,
    /// What reading one document may cost (unpacked archive size, text).
    pub extract: crate::extract::ExtractLimits,
    /// Shared Qdrant server; without it the workers keep an embedded store.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<Secret<String>>,
    /// Messaging providers' API bases and the public URL webhooks use.
    pub channels: crate::channels::ChannelsConfig,
    /// LLM call timeout and embedding batching, retries and per-tenant limit.
    pub llm: crate::llm::LlmConfig,
    /// Whom outbound calls a tenant can steer may reach
    /// (`OUTBOUND_ALLOW_PRIVATE_NETWORKS`).
    pub outbound: crate::egress::EgressPolicy,
    /// `METRICS_TOKEN`: when set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<Secret<String>>,
    /// `METRICS_PORT`: when set, the api serves `/metrics` on this port
    /// (bound to `HOST`) instead of its main one.
    pub metrics_port: Option<u16>,
    /// Request rate limits (`RATE_LIMIT_*`, `API_KEY_*_RATE_LIMIT`).
    pub rate_limits: crate::rate_limits::RateLimits,
}

/// Where variables come from: the process environment, or a map in tests.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    fn parsed<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        parse_value(name, self.get(name), default)
    }
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or single addresses.
fn parse_proxies(raw: Option<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    name: "TRUSTED_PROXIES",
                    reason: format!("'{s}' is not an IP address or CIDR range"),
                })
        })
        .collect()
}

fn parse_value<T: FromStr>(
    name: &'static str,
    raw: Option<String>,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// A `true`/`false` setting, false when unset.
pub(crate) fn flag(name: &'static str, raw: Option<String>) -> Result<bool, ConfigError> {
    parse_value(name, raw.filter(|v| !v.trim().is_empty()), false)
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

impl Config {
    /// Reads `.env` when present (development), then the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_current_env()
    }

    /// Reads the environment only.
    pub fn from_current_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| env::var(name).ok())
    }

    /// Reads variables through `lookup`; tests pass their own values.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        let var = |name: &'static str| vars.get(name);
        let required = |name: &'static str| vars.required(name);
        let jwt_secret = required("JWT_SECRET")?;
        if jwt_secret.len() < 32 {
            return Err(invalid("JWT_SECRET", "must be at least 32 characters"));
        }
        let ttl_seconds: i64 = vars.parsed("JWT_TTL_SECONDS", 86_400)?;
        if !(60..=30 * 86_400).contains(&ttl_seconds) {
            return Err(invalid(
                "JWT_TTL_SECONDS",
                "must be between 60 and 2592000 seconds",
            ));
        }

        let key_b64 = required("DATA_ENCRYPTION_KEY")?;
        let key_bytes = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|e| invalid("DATA_ENCRYPTION_KEY", format!("not base64: {e}")))?;
        let key: [u8; 32] = key_bytes.try_into().map_err(|v: Vec<u8>| {
            invalid(
                "DATA_ENCRYPTION_KEY",
                format!("must decode to 32 bytes, got {}", v.len()),
            )
        })?;

        let log_format = match var("LOG_FORMAT").as_deref().unwrap_or("pretty") {
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            other => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("'{other}' is not json or pretty"),
                ));
            }
        };

        let cors_origins = var("CORS_ORIGINS")
            .unwrap_or_else(|| "http://localhost:5173".to_owned())
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .collect();

        let super_admin_seed = match (var("SUPER_ADMIN_EMAIL"), var("SUPER_ADMIN_PASSWORD")) {
            (Some(email), Some(password)) => Some(SuperAdminSeed {
                email,
                password: Secret::new(password),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("SUPER_ADMIN_PASSWORD")),
            (None, Some(_)) => return Err(ConfigError::Missing("SUPER_ADMIN_EMAIL")),
        };

        let plans = match var("PLANS_JSON") {
            None => default_plans(),
            Some(raw) => serde_json::from_str::<Vec<Plan>>(&raw)
                .map_err(|e| invalid("PLANS_JSON", e.to_string()))?
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect(),
        };
        let default_plan = var("DEFAULT_PLAN").unwrap_or_else(|| "free".to_owned());
        if !plans.contains_key(&default_plan) {
            return Err(invalid(
                "DEFAULT_PLAN",
                format!("plan '{default_plan}' is not defined"),
            ));
        }

        let mongodb_uri = required("MONGODB_URI")?;
        if !(mongodb_uri.starts_with("mongodb://") || mongodb_uri.starts_with("mongodb+srv://")) {
            return Err(invalid(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let redis_url = required("REDIS_URL")?;
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(invalid(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }

        Ok(Self {
            host: var("HOST").unwrap_or_else(|| "0.0.0.0".to_owned()),
            port: vars.parsed("PORT", 3000)?,
            mongodb_uri: Secret::new(mongodb_uri),
            mongodb_db: var("MONGODB_DB").unwrap_or_else(|| "aigentable".to_owned()),
            redis_url: Secret::new(redis_url),
            redis_namespace: var("REDIS_NAMESPACE").unwrap_or_else(|| "aigentable".to_owned()),
            jwt: JwtConfig {
                secret: Secret::new(jwt_secret.into_bytes()),
                issuer: var("JWT_ISSUER").unwrap_or_else(|| "aigentable".to_owned()),
                audience: var("JWT_AUDIENCE").unwrap_or_else(|| "aigentable-web".to_owned()),
                ttl_seconds,
            },
            cors_origins,
            data_encryption_key: Secret::new(key),
            log_format,
            login_limits: LoginLimits {
                per_ip: vars.parsed("LOGIN_MAX_FAILURES_PER_IP", 50)?,
                registrations_per_ip: vars.parsed("REGISTER_MAX_PER_IP", 100)?,
                per_email: vars.parsed("LOGIN_MAX_FAILURES_PER_EMAIL", 5)?,
                window_seconds: vars.parsed("LOGIN_WINDOW_SECONDS", 900)?,
            },
            password_reset_ttl_minutes: vars.parsed("PASSWORD_RESET_TTL_MINUTES", 30)?,
            job_retention_days: vars.parsed("JOB_RETENTION_DAYS", 30)?,
            job_failed_retention_days: vars.parsed("JOB_FAILED_RETENTION_DAYS", 90)?,
            backup_keep_daily: vars.parsed("BACKUP_KEEP_DAILY", 7)?,
            backup_keep_weekly: vars.parsed("BACKUP_KEEP_WEEKLY", 4)?,
            app_base_url: var("APP_BASE_URL").unwrap_or_else(|| "http://localhost:5173".to_owned()),
            smtp_url: var("SMTP_URL").map(Secret::new),
            email_from: var("EMAIL_FROM")
                .unwrap_or_else(|| "AIgentable <no-reply@localhost>".to_owned()),
            super_admin_seed,
            trusted_proxies: parse_proxies(var("TRUSTED_PROXIES"))?,
            password_hash_concurrency: match vars.parsed("PASSWORD_HASH_CONCURRENCY", 0usize)? {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            },
            password_hash_queue: vars.parsed("PASSWORD_HASH_QUEUE", 32usize)?,
            email_verification_ttl_minutes: vars.parsed("EMAIL_VERIFICATION_TTL_MINUTES", 1440)?,
            plans,
            default_plan,
            data_dir: var("DATA_DIR").unwrap_or_else(|| ".data".to_owned()),
            document_max_bytes: vars.parsed("DOCUMENT_MAX_BYTES", 50 * 1024 * 1024)?,
            extract: crate::extract::ExtractLimits::from_lookup(lookup)?,
            qdrant_url: var("QDRANT_URL"),
            qdrant_api_key: var("QDRANT_API_KEY").map(Secret::new),
            channels: crate::channels::ChannelsConfig::from_lookup(lookup)?,
            llm: crate::llm::LlmConfig::from_lookup(lookup)?,
            outbound: crate::egress::EgressPolicy {
                allow_private_networks: vars.parsed("OUTBOUND_ALLOW_PRIVATE_NETWORKS", false)?,
            },
            metrics_token: match var("METRICS_TOKEN") {
                Some(t) if t.trim().len() < 16 => {
                    return Err(invalid("METRICS_TOKEN", "must be at least 16 characters"));
                }
                t => t.map(|t| Secret::new(t.trim().to_owned())),
            },
            metrics_port: match vars.parsed::<u16>("METRICS_PORT", 0)? {
                0 => None,
                port => Some(port),
            },
            rate_limits: crate::rate_limits::RateLimits::from_lookup(lookup)?,
        })
    }

    pub fn plan(&self, id: &str) -> &Plan {
        self.plans
            .get(id)
            .or_else(|| self.plans.get(&self.default_plan))
            .unwrap_or_else(|| unreachable!("default plan is checked at start"))
    }
}
