//! End-to-end tests through the api, one module per area, in one binary so
//! that CI links once (zero2prod's `tests/api/main.rs`). The queue's own
//! tests, which measure timing, are their own binary (`tests/queue/`).
//!
//! Where each job type is exercised:
//!
//! | job | modules |
//! |---|---|
//! | `ingest_document`, `purge_document` | `documents`, `embeddings`, `training` |
//! | `search_knowledge` | `documents` |
//! | `train_agent` | `training` |
//! | `receive_inbound` | `webhooks`, `widget`, `sessions` |
//! | `process_inbound` | `conversations`, `sessions` |
//! | `generate_reply` | `agent_test`, `sessions` |
//! | `answer_message` | `replies`, `streaming`, `webhooks` |
//! | `summarize_handoff` | `handoff_briefs` |
//! | `deliver_message` | `replies`, `conversations`, `channels` |
//! | `test_channel`, `register_webhook` | `channels` |
//! | `test_ai_provider` | `ai_providers` |
//! | `send_email` | `auth`, `accounts` |
//! | `sweep`, `rollup_analytics`, `run_backup` | `scheduler`, `analytics` |
//! | `restore_backup` | `backups` |
//! | `export_analytics` | `analytics` |
//! | every 202 body | `accepted_jobs` |

mod accepted_jobs;
mod accounts;
mod agent_test;
mod agents;
mod ai_providers;
mod analytics;
mod api_keys;
mod auth;
mod backups;
mod channels;
mod conversations;
mod documents;
mod egress;
mod embeddings;
mod evals;
mod group_commit;
mod handoff_briefs;
mod http_surface;
mod jobs_api;
mod live_cache;
mod metrics;
mod plan_limits;
mod policy;
mod query_plans;
mod rate_limits;
mod realtime;
mod replies;
mod scheduler;
mod seed_socket_client;
mod sessions;
mod streaming;
mod system_metrics;
mod training;
mod users_tenants;
mod webhooks;
mod widget;
