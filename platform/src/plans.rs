//! Billing plans. Defined in configuration (`PLANS_JSON`) so that sales can
//! change limits without a release; these are the defaults.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    pub users: u64,
    pub agents: u64,
    /// Channels (WhatsApp numbers, pages, bots, websites); plans in
    /// `PLANS_JSON` without it get 10.
    #[serde(default = "default_channels")]
    pub channels: u64,
    pub documents: u64,
    pub storage_bytes: u64,
    pub conversations_per_month: u64,
    pub messages_per_month: u64,
    pub llm_tokens_per_month: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// Monthly price in the smallest currency unit (cents).
    pub price_cents: u64,
    pub currency: String,
    pub limits: PlanLimits,
}

const MB: u64 = 1024 * 1024;

fn default_channels() -> u64 {
    10
}

pub fn default_plans() -> HashMap<String, Plan> {
    let plan = |id: &str, name: &str, price_cents, limits| Plan {
        id: id.to_owned(),
        name: name.to_owned(),
        price_cents,
        currency: "USD".to_owned(),
        limits,
    };
    [
        plan(
            "free",
            "Free",
            0,
            PlanLimits {
                users: 3,
                agents: 2,
                channels: 3,
                documents: 50,
                storage_bytes: 100 * MB,
                conversations_per_month: 500,
                messages_per_month: 5_000,
                llm_tokens_per_month: 500_000,
            },
        ),
        plan(
            "pro",
            "Pro",
            4_900,
            PlanLimits {
                users: 20,
                agents: 10,
                channels: 20,
                documents: 1_000,
                storage_bytes: 5_000 * MB,
                conversations_per_month: 10_000,
                messages_per_month: 100_000,
                llm_tokens_per_month: 10_000_000,
            },
        ),
        plan(
            "enterprise",
            "Enterprise",
            29_900,
            PlanLimits {
                users: 500,
                agents: 100,
                channels: 200,
                documents: 50_000,
                storage_bytes: 200_000 * MB,
                conversations_per_month: 500_000,
                messages_per_month: 5_000_000,
                llm_tokens_per_month: 500_000_000,
            },
        ),
    ]
    .into_iter()
    .map(|p| (p.id.clone(), p))
    .collect()
}
