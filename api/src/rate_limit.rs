//! Request rate limits of authenticated calls (GCRA in Redis, shared by
//! every api replica; see `aigentable_platform::rate_limits`).
//!
//! Every request is counted in: its API key's bucket (the key's
//! `rateLimit` per hour) or its user's (`RATE_LIMIT_USER_PER_MINUTE`); its
//! tenant's (`RATE_LIMIT_TENANT_PER_MINUTE`, by plan); and on the expensive
//! routes (`expensive` in the policy table), a bucket of the caller on that route
//! (`RATE_LIMIT_EXPENSIVE_PER_MINUTE`). Every answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
//! (seconds until the tightest bucket is full again) of the tightest bucket;
//! a refused request is a 429 with `Retry-After` and consumes nothing.

use salvo::http::HeaderValue;
use salvo::prelude::*;

use aigentable_platform::rate_limits::{Bucket, RateLimits, Verdict};

use crate::error::ApiError;
use crate::guard::Caller;
use crate::policy::RoutePolicy;
use crate::state::AppState;

/// The buckets a request of `caller` on `route` is counted in.
pub fn buckets(limits: &RateLimits, caller: &Caller, route: &RoutePolicy) -> Vec<Bucket> {
    let (who, own) = match &caller.api_key {
        Some(key) => {
            let who = format!("key:{}", key.id);
            (who.clone(), Bucket::per_hour(who, key.rate_limit))
        }
        None => {
            let who = format!("user:{}", caller.user_id());
            (who.clone(), Bucket::per_minute(who, limits.user_per_minute))
        }
    };
    let mut out = vec![
        own,
        Bucket::per_minute(
            format!("tenant:{}", caller.tenant_id),
            limits.tenant_limit(&caller.plan),
        ),
    ];
    if route.expensive {
        out.push(Bucket::per_minute(
            format!("{who}:route:{}:{}", route.method, route.path),
            limits.expensive_per_minute,
        ));
    }
    out
}

fn header(res: &mut Response, name: &'static str, value: u64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        res.headers_mut().insert(name, v);
    }
}

pub fn write_headers(res: &mut Response, verdict: &Verdict) {
    header(res, "x-ratelimit-limit", u64::from(verdict.limit));
    header(res, "x-ratelimit-remaining", verdict.remaining);
    header(res, "x-ratelimit-reset", verdict.reset_secs);
}

/// Counts the request; a 429 error when a bucket is exhausted.
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    route: &RoutePolicy,
    res: &mut Response,
) -> Result<(), ApiError> {
    let buckets = buckets(&state.platform.config.rate_limits, caller, route);
    let verdict = aigentable_platform::rate_limits::admit(&state.platform.kv, &buckets).await?;
    write_headers(res, &verdict);
    if verdict.admitted {
        Ok(())
    } else {
        tracing::info!(
            tenant_id = %caller.tenant_id,
            api_key_id = caller.api_key.as_ref().map(|k| k.id.as_str()),
            route = route.path,
            retry_after_secs = verdict.retry_after_secs,
            "request rate limited"
        );
        Err(ApiError::TooManyRequests {
            retry_after_secs: verdict.retry_after_secs,
        })
    }
}
