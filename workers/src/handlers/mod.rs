//! One handler module per job type.

pub mod ai_provider_test;
pub mod backup;
pub mod channel_jobs;
pub mod delivery;
pub mod export;
pub mod inbound;
pub mod knowledge;
pub mod noop;
pub mod plan_cap;
pub mod reply;
pub mod rollup;
pub mod send_email;
pub mod sweep;
pub mod training;
