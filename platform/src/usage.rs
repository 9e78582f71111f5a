//! Tenant usage from real counts, for the usage and billing endpoints.
//!
//! Collections that later features fill (agents, documents, conversations,
//! messages, token usage) are counted already: while they are empty the
//! count is simply zero.

use bson::{Document, doc};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use futures::TryStreamExt;
use serde::Serialize;

use crate::db::{Db, DbResult};
use crate::ids::TenantId;

pub mod collections {
    pub const USERS: &str = "users";
    pub const AGENTS: &str = "agents";
    pub const CHANNELS: &str = "channels";
    pub const DOCUMENTS: &str = "documents";
    pub const CONVERSATIONS: &str = "conversations";
    pub const MESSAGES: &str = "messages";
    /// One entry per LLM call ([`record_tokens`]): `{tenantId, agentId, providerId, model, purpose, promptTokens, completionTokens, totalTokens, createdAt}`.
    pub const TOKEN_USAGE: &str = "token_usage";
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub users: u64,
    pub agents: u64,
    pub channels: u64,
    pub documents: u64,
    pub storage_bytes: u64,
    pub conversations: u64,
    pub messages: u64,
    pub llm_tokens: u64,
}

/// The calendar month (UTC) that contains `now`.
pub fn current_period(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (start, end)
}

async fn count(db: &Db, coll: &str, filter: Document) -> DbResult<u64> {
    Ok(db
        .unscoped::<Document>(coll)
        .count_documents(filter)
        .await?)
}

async fn sum(db: &Db, coll: &str, filter: Document, field: &str) -> DbResult<u64> {
    let pipeline = vec![
        doc! { "$match": filter },
        doc! { "$group": { "_id": null, "total": { "$sum": format!("${field}") } } },
    ];
    let mut cursor = db.unscoped::<Document>(coll).aggregate(pipeline).await?;
    let total = match cursor.try_next().await? {
        Some(d) => match d.get("total") {
            Some(bson::Bson::Int32(v)) => u64::try_from(*v).unwrap_or(0),
            Some(bson::Bson::Int64(v)) => u64::try_from(*v).unwrap_or(0),
            Some(bson::Bson::Double(v)) if *v > 0.0 => v.round() as u64,
            _ => 0,
        },
        None => 0,
    };
    Ok(total)
}

/// Records the tokens of one LLM call (collection `token_usage`), which the
/// usage and billing endpoints sum. `purpose` is `reply`, `test`,
/// `embedding` or `provider_test`.
pub async fn record_tokens(
    db: &Db,
    tenant: &TenantId,
    agent_id: Option<&str>,
    provider_id: Option<&str>,
    model: &str,
    purpose: &str,
    usage: &crate::llm::TokenUsage,
) -> DbResult<()> {
    let entry = doc! {
        "tenantId": tenant.as_str(),
        "agentId": agent_id,
        "providerId": provider_id,
        "model": model,
        "purpose": purpose,
        "promptTokens": i64::from(usage.prompt_tokens),
        "completionTokens": i64::from(usage.completion_tokens),
        "totalTokens": i64::from(usage.total_tokens),
        "createdAt": bson::DateTime::now(),
    };
    db.unscoped::<Document>(collections::TOKEN_USAGE)
        .insert_one(entry)
        .await?;
    Ok(())
}

/// The tenant's messages and LLM tokens of the period `(start, end)`: the
/// two monthly allowances a bot reply checks, in two concurrent round trips.
pub async fn period_messages_and_tokens(
    db: &Db,
    tenant: &TenantId,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> DbResult<(u64, u64)> {
    let in_period = doc! {
        "tenantId": tenant.as_str(),
        "createdAt": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) },
    };
    tokio::try_join!(
        count(db, collections::MESSAGES, in_period.clone()),
        sum(db, collections::TOKEN_USAGE, in_period, "totalTokens"),
    )
}

pub async fn tenant_usage(db: &Db, tenant: &TenantId, now: DateTime<Utc>) -> DbResult<Usage> {
    use collections::*;
    let (start, end) = current_period(now);
    let t = tenant.as_str();
    let in_period = doc! {
        "tenantId": t,
        "createdAt": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) },
    };
    let (users, agents, channels, documents, storage_bytes, conversations, messages, llm_tokens) =
        tokio::try_join!(
            count(db, USERS, doc! { "tenantId": t }),
            count(db, AGENTS, doc! { "tenantId": t }),
            count(db, CHANNELS, doc! { "tenantId": t }),
            count(db, DOCUMENTS, doc! { "tenantId": t }),
            sum(db, DOCUMENTS, doc! { "tenantId": t }, "size"),
            count(db, CONVERSATIONS, in_period.clone()),
            count(db, MESSAGES, in_period.clone()),
            sum(db, TOKEN_USAGE, in_period, "totalTokens"),
        )?;
    Ok(Usage {
        period_start: start,
        period_end: end,
        users,
        agents,
        channels,
        documents,
        storage_bytes,
        conversations,
        messages,
        llm_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_is_the_calendar_month() {
        let now = Utc.with_ymd_and_hms(2026, 12, 15, 10, 0, 0).single();
        let (s, e) = current_period(now.unwrap_or_default());
        assert_eq!(s.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(e.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }
}
