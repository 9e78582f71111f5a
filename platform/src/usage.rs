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
use crate::kv::Kv;

pub mod collections {
    pub const USERS: &str = "users";
    pub const AGENTS: &str = "agents";
    pub const CHANNELS: &str = "channels";
    pub const DOCUMENTS: &str = "documents";
    pub const CONVERSATIONS: &str = "conversations";
    pub const MESSAGES: &str = "messages";
    /// One entry per LLM call ([`record_tokens`]) but those of stored bot
    /// replies, which carry their own (`billedTokens`): `{tenantId, agentId, providerId, model, purpose, promptTokens, completionTokens, totalTokens, createdAt}`.
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
    platform: &crate::Platform,
    tenant: &TenantId,
    agent_id: Option<&str>,
    provider_id: Option<&str>,
    model: &str,
    purpose: &str,
    usage: &crate::llm::TokenUsage,
) -> DbResult<()> {
    let (db, kv) = (&platform.db, &platform.kv);
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
    count_tokens(kv, tenant, usage).await;
    Ok(())
}

/// Counts the tokens of a recorded LLM call in the tenant's monthly counter.
async fn count_tokens(kv: &Kv, tenant: &TenantId, usage: &crate::llm::TokenUsage) {
    let tokens = u64::from(usage.total_tokens);
    if tokens > 0 {
        add_to_counters(kv, tenant, Utc::now(), &[(counters::LLM_TOKENS, tokens)]).await;
    }
}

/// Counts a stored bot reply and the tokens it was billed (its
/// `billedTokens`, counted in the month it was stored, as the database
/// counts them) in one round trip.
pub async fn count_reply(
    kv: &Kv,
    tenant: &TenantId,
    at: DateTime<Utc>,
    usage: Option<&crate::llm::TokenUsage>,
) {
    let tokens = usage.map_or(0, |u| u64::from(u.total_tokens));
    add_to_counters(
        kv,
        tenant,
        at,
        &[(counters::MESSAGES, 1), (counters::LLM_TOKENS, tokens)],
    )
    .await;
}

/// The tokens of the period: the `token_usage` entries and the bot replies
/// that carry their own (`billedTokens`).
async fn tokens_in(db: &Db, in_period: Document) -> DbResult<u64> {
    let (entries, replies) = tokio::try_join!(
        sum(
            db,
            collections::TOKEN_USAGE,
            in_period.clone(),
            "totalTokens"
        ),
        sum(db, collections::MESSAGES, in_period, "billedTokens"),
    )?;
    Ok(entries + replies)
}

/// The tenant's messages and LLM tokens of the period `(start, end)`
/// counted in the database: what [`period_messages_and_tokens`] seeds its
/// counters with. Reads every message and token entry of the period.
async fn counted_messages_and_tokens(
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
        tokens_in(db, in_period),
    )
}

/// Monthly counters of messages and LLM tokens per tenant, in Redis: the
/// two allowances every bot reply checks, read in one Redis round trip
/// instead of counting the month's messages in the database (a cost that
/// grew with the tenant's traffic). A hash per tenant and month
/// (`usage:{tenant}:{YYYY-MM}`, kept until a day after the month ends) is
/// seeded from the database the first time it is read; every stored
/// message and recorded LLM call adds to it once it exists. A message
/// stored in the few milliseconds between a seed's count and its write is
/// missed (once per tenant and month, or after Redis lost the hash); the
/// usage endpoint always counts in the database.
mod counters {
    use chrono::{DateTime, Utc};
    use redis::Script;

    use crate::ids::TenantId;
    use crate::kv::Kv;

    pub(super) const MESSAGES: &str = "messages";
    pub(super) const LLM_TOKENS: &str = "llmTokens";

    /// KEYS: hash. ARGV: field, amount, field, amount... Adds only to a
    /// seeded hash.
    const ADD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  return true
end
return false
";
    static ADD_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(ADD));

    /// KEYS: hash. ARGV: messages, tokens, expiry (unix ms). Seeds the
    /// hash unless another seed did; returns the counters.
    const SEED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'messages', ARGV[1], 'llmTokens', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'messages', 'llmTokens')
";

    pub(super) fn key(kv: &Kv, tenant: &TenantId, start: DateTime<Utc>) -> String {
        kv.key(&["usage", tenant.as_str(), &start.format("%Y-%m").to_string()])
    }

    pub(super) async fn add(kv: &Kv, key: &str, amounts: &[(&str, u64)]) -> redis::RedisResult<()> {
        let mut invocation = ADD_SCRIPT.key(key);
        for (field, amount) in amounts {
            invocation.arg(*field).arg(*amount);
        }
        invocation
            .invoke_async::<Option<bool>>(&mut kv.conn())
            .await
            .map(|_| ())
    }

    pub(super) async fn read(kv: &Kv, key: &str) -> redis::RedisResult<Option<(u64, u64)>> {
        let (messages, tokens): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(key)
            .arg(MESSAGES)
            .arg(LLM_TOKENS)
            .query_async(&mut kv.conn())
            .await?;
        Ok(messages.zip(tokens))
    }

    pub(super) async fn seed(
        kv: &Kv,
        key: &str,
        (messages, tokens): (u64, u64),
        expires: DateTime<Utc>,
    ) -> redis::RedisResult<Option<(u64, u64)>> {
        let (messages, tokens): (Option<u64>, Option<u64>) = Script::new(SEED)
            .key(key)
            .arg(messages)
            .arg(tokens)
            .arg(expires.timestamp_millis())
            .invoke_async(&mut kv.conn())
            .await?;
        Ok(messages.zip(tokens))
    }
}

/// The tenant's messages and LLM tokens of the period `(start, end)`: the
/// two monthly allowances a bot reply checks. From the Redis counters (see
/// [`counters`]); counted in the database when they are not seeded yet or
/// Redis does not answer.
pub async fn period_messages_and_tokens(
    db: &Db,
    kv: &Kv,
    tenant: &TenantId,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> DbResult<(u64, u64)> {
    let key = counters::key(kv, tenant, period.0);
    match counters::read(kv, &key).await {
        Ok(Some(both)) => return Ok(both),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(tenant_id = %tenant, error = %e, "usage counters unreadable, counting in the database");
            return counted_messages_and_tokens(db, tenant, period).await;
        }
    }
    let counted = counted_messages_and_tokens(db, tenant, period).await?;
    let expires = period.1 + chrono::Duration::days(1);
    match counters::seed(kv, &key, counted, expires).await {
        Ok(Some(both)) => Ok(both),
        Ok(None) => Ok(counted),
        Err(e) => {
            tracing::warn!(tenant_id = %tenant, error = %e, "usage counters not seeded");
            Ok(counted)
        }
    }
}

/// Adds a stored message to its month's counter (when seeded).
pub async fn count_message(kv: &Kv, tenant: &TenantId, at: DateTime<Utc>) {
    add_to_counters(kv, tenant, at, &[(counters::MESSAGES, 1)]).await;
}

/// Adds each amount to its field of the counters of `at`'s month. Best
/// effort: a lost increment only delays a cap a little.
async fn add_to_counters(kv: &Kv, tenant: &TenantId, at: DateTime<Utc>, amounts: &[(&str, u64)]) {
    let key = counters::key(kv, tenant, current_period(at).0);
    if let Err(e) = counters::add(kv, &key, amounts).await {
        let fields: Vec<&str> = amounts.iter().map(|(field, _)| *field).collect();
        tracing::warn!(tenant_id = %tenant, error = %e, ?fields, "not counted in the usage counters");
    }
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
            tokens_in(db, in_period),
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
