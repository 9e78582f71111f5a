//! One module per job type: payload, pinned queue, attempts, timeout and
//! idempotency key. Handlers live in the workers crate; a type whose
//! feature is not built yet has its contract here already.

pub mod deliver_message;
pub mod export_analytics;
pub mod generate_reply;
pub mod ingest_document;
pub mod noop;
pub mod process_inbound;
pub mod purge_document;
pub mod register_webhook;
pub mod rollup_analytics;
pub mod run_backup;
pub mod search_knowledge;
pub mod send_email;
pub mod sweep;
pub mod test_ai_provider;
pub mod test_channel;
pub mod train_agent;

pub use deliver_message::DeliverMessage;
pub use export_analytics::ExportAnalytics;
pub use generate_reply::GenerateReply;
pub use ingest_document::IngestDocument;
pub use noop::Noop;
pub use process_inbound::ProcessInbound;
pub use purge_document::PurgeDocument;
pub use register_webhook::RegisterWebhook;
pub use rollup_analytics::RollupAnalytics;
pub use run_backup::RunBackup;
pub use search_knowledge::SearchKnowledge;
pub use send_email::SendEmail;
pub use sweep::Sweep;
pub use test_ai_provider::TestAiProvider;
pub use test_channel::TestChannel;
pub use train_agent::TrainAgent;

/// Every queue a worker process serves by default (`bench` only on request).
pub const ALL_QUEUES: &[&str] = &[
    "outbound",
    "maintenance",
    "replies",
    "ingest",
    "inbound",
    "search",
    "emails",
    "integrations",
    "training",
];

/// Queues that exist but are served only when named (`--queues bench`).
pub const OPT_IN_QUEUES: &[&str] = &["bench"];

/// Jobs run at the same time per worker process and job type, unless
/// configured (`WORKER_CONCURRENCY_<QUEUE>` or `WORKER_CONCURRENCY`). Waiting
/// on providers is cheap, so those queues run wide; extraction and backups
/// use the CPU and disk, so they run narrow.
pub fn default_concurrency(queue: &str) -> usize {
    match queue {
        "replies" | "outbound" => 32,
        "inbound" | "search" => 16,
        "emails" | "integrations" => 8,
        "ingest" | "maintenance" => 2,
        "training" => 1,
        // No-op jobs cost nothing; a wide window measures the queue itself.
        "bench" => 64,
        _ => 4,
    }
}
