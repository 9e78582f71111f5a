//! One handler file per job type, named like the type's module in
//! `jobs/src/types/`; code two jobs share lives in a module beside them.

pub mod answer_message;
pub mod chaos_probe;
pub mod deliver_message;
pub mod deliver_reply;
pub mod eval_run;
pub mod export_analytics;
pub mod generate_reply;
pub mod ingest_document;
pub mod noop;
pub mod process_inbound;
pub mod purge_document;
pub mod receive_inbound;
pub mod register_webhook;
pub mod restore_backup;
pub mod rollup_analytics;
pub mod run_backup;
pub mod search_knowledge;
pub mod send_email;
pub mod summarize_handoff;
pub mod sweep;
pub mod test_ai_provider;
pub mod test_channel;
pub mod train_agent;

// Shared by several jobs.
pub mod channel_check;
/// Sending a stored outbound message, for both delivery jobs.
pub mod delivery;
/// Handing a conversation to staff, with its notice and brief.
pub mod handoff;
pub mod knowledge;
/// The monthly plan caps a reply checks before it is composed.
pub mod plan_cap;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A job type's handler is found where a newcomer looks for it.
    #[test]
    fn every_job_type_has_a_handler_file_named_after_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/handlers");
        for kind in aigentable_jobs::types::all() {
            let file = dir.join(format!("{}.rs", kind.name));
            let folder = dir.join(kind.name).join("mod.rs");
            assert!(
                file.is_file() || folder.is_file(),
                "no handlers/{}.rs for job type {}",
                kind.name,
                kind.name
            );
        }
    }
}
