//! Plan limits, enforced from the plans the billing endpoint shows
//! (`PLANS_JSON`, `aigentable_platform::plans`).
//!
//! Creating what a plan counts (users, agents, channels, documents and
//! their storage) and staff messages past the monthly allowance answer
//! **402 Payment Required**, code `PLAN_LIMIT_EXCEEDED`, with
//! `details: {limit, value, usage}` (the limit's name as billing shows it,
//! the plan's value and the tenant's usage). Inbound customer messages are
//! never refused; bot replies over the monthly message or token allowance
//! hand the conversation to a human instead (workers).
//!
//! The check counts, then the handler creates: two concurrent requests at
//! the very limit may both pass (one over). Limits are a billing boundary,
//! not a security one, so that is accepted rather than serialised.

use bson::{Document, doc};
use chrono::Utc;

use aigentable_platform::plans::PlanLimits;
use aigentable_platform::usage::{collections, current_period};

use crate::error::{ApiError, ApiResult};
use crate::guard::Caller;
use crate::state::AppState;

/// The routes that can answer 402 (for the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "users"),
    ("POST", "agents"),
    ("POST", "channels"),
    ("POST", "documents/upload"),
    ("POST", "conversations/{id}/messages"),
];

pub fn limits_route(method: &str, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == path)
}

/// What a request is about to add.
#[derive(Debug, Clone, Copy)]
pub enum Adding {
    Users(u64),
    Agents(u64),
    Channels(u64),
    /// Documents and their total bytes.
    Documents {
        count: u64,
        bytes: u64,
    },
    /// Messages this month (staff replies).
    Messages(u64),
}

fn limits<'a>(state: &'a AppState, who: &Caller) -> &'a PlanLimits {
    &state.platform.config.plan(&who.plan).limits
}

async fn count(state: &AppState, coll: &str, filter: Document) -> ApiResult<u64> {
    Ok(state
        .platform
        .db
        .unscoped::<Document>(coll)
        .count_documents(filter)
        .await
        .map_err(aigentable_platform::db::DbError::from)?)
}

fn over(limit: &'static str, value: u64, usage: u64, adding: u64) -> ApiResult<()> {
    if usage.saturating_add(adding) > value {
        Err(ApiError::PlanLimit {
            limit,
            value,
            usage,
        })
    } else {
        Ok(())
    }
}

/// Refuses (402) what would take the tenant past its plan.
pub async fn ensure_room(state: &AppState, who: &Caller, adding: Adding) -> ApiResult<()> {
    let l = limits(state, who);
    let t = who.tenant_id.as_str();
    match adding {
        Adding::Users(n) => {
            let used = count(state, collections::USERS, doc! { "tenantId": t }).await?;
            over("users", l.users, used, n)
        }
        Adding::Agents(n) => {
            let used = count(state, collections::AGENTS, doc! { "tenantId": t }).await?;
            over("agents", l.agents, used, n)
        }
        Adding::Channels(n) => {
            let used = count(state, "channels", doc! { "tenantId": t }).await?;
            over("channels", l.channels, used, n)
        }
        Adding::Documents { count: n, bytes } => {
            let usage = aigentable_platform::usage::tenant_usage(
                &state.platform.db,
                &who.tenant_id,
                Utc::now(),
            )
            .await?;
            over("documents", l.documents, usage.documents, n)?;
            over("storageBytes", l.storage_bytes, usage.storage_bytes, bytes)
        }
        Adding::Messages(n) => {
            let (start, end) = current_period(Utc::now());
            let used = count(
                state,
                collections::MESSAGES,
                doc! {
                    "tenantId": t,
                    "createdAt": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) },
                },
            )
            .await?;
            over("messages", l.messages_per_month, used, n)
        }
    }
}
