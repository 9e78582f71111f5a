//! The `/api/v1` routes, one module (or folder) per resource, each with
//! its `router()` listing its routes together.

pub mod agents;
pub mod ai_providers;
pub mod analytics;
pub mod api_keys;
pub mod auth;
pub mod channels;
pub mod conversations;
pub mod documents;
pub mod health;
pub mod jobs;
pub mod search;
pub mod system;
pub mod system_metrics;
pub mod tenants;
pub mod users;
pub mod webhooks;
pub mod widget;
