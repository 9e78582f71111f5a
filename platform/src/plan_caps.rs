//! The monthly allowances of a tenant's plan that stop bot replies:
//! `messagesPerMonth` and `llmTokensPerMonth`. Past either, the reply
//! worker hands the conversation to a human with a system note instead of
//! answering; inbound customer messages are always stored.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::db::{Db, DbResult};
use crate::kv::Kv;
use crate::model::tenant::Tenant;
use crate::usage::current_period;

/// A monthly allowance used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapReached {
    /// `messages` or `llmTokens`, as billing names them.
    pub limit: &'static str,
    pub value: u64,
    pub usage: u64,
}

/// The first monthly allowance the tenant has used up, if any.
pub async fn bot_cap_reached(
    db: &Db,
    kv: &Kv,
    config: &Config,
    t: &Tenant,
    now: DateTime<Utc>,
) -> DbResult<Option<CapReached>> {
    let tenant = &t.id;
    let limits = &config.plan(&t.plan).limits;
    let (messages, tokens) =
        crate::usage::period_messages_and_tokens(db, kv, tenant, current_period(now)).await?;
    if messages >= limits.messages_per_month {
        return Ok(Some(CapReached {
            limit: "messages",
            value: limits.messages_per_month,
            usage: messages,
        }));
    }
    if tokens >= limits.llm_tokens_per_month {
        return Ok(Some(CapReached {
            limit: "llmTokens",
            value: limits.llm_tokens_per_month,
            usage: tokens,
        }));
    }
    Ok(None)
}
