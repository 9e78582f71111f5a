//! One module per job type: payload, queue, attempts, timeout and
//! idempotency key. Handlers live in the workers crate, one file per type
//! named like its module here.
//!
//! Adding a job type: its module here (`pub mod` + `pub use`), one line in
//! [`for_each_job_type!`], and its handler file in `workers/src/handlers/`.
//! Dispatch by stored name, registration and the unit tests all read that
//! one list, so a type left out of it, or without a handler, fails to build
//! or fails a test.

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

pub use answer_message::AnswerMessage;
pub use chaos_probe::ChaosProbe;
pub use deliver_message::DeliverMessage;
pub use deliver_reply::DeliverReply;
pub use eval_run::EvalRun;
pub use export_analytics::ExportAnalytics;
pub use generate_reply::GenerateReply;
pub use ingest_document::IngestDocument;
pub use noop::Noop;
pub use process_inbound::ProcessInbound;
pub use purge_document::PurgeDocument;
pub use receive_inbound::ReceiveInbound;
pub use register_webhook::RegisterWebhook;
pub use restore_backup::RestoreBackup;
pub use rollup_analytics::RollupAnalytics;
pub use run_backup::RunBackup;
pub use search_knowledge::SearchKnowledge;
pub use send_email::SendEmail;
pub use summarize_handoff::SummarizeHandoff;
pub use sweep::Sweep;
pub use test_ai_provider::TestAiProvider;
pub use test_channel::TestChannel;
pub use train_agent::TrainAgent;

/// Calls the macro `$m!` with every job type, as paths: the one list that
/// run-time dispatch on a stored type name ([`crate::dispatch`]) and the
/// workers' registration use.
#[macro_export]
macro_rules! for_each_job_type {
    ($m:ident) => {
        $m!(
            $crate::types::SendEmail,
            $crate::types::IngestDocument,
            $crate::types::PurgeDocument,
            $crate::types::SearchKnowledge,
            $crate::types::TrainAgent,
            $crate::types::ReceiveInbound,
            $crate::types::ProcessInbound,
            $crate::types::GenerateReply,
            $crate::types::AnswerMessage,
            $crate::types::SummarizeHandoff,
            $crate::types::EvalRun,
            $crate::types::DeliverMessage,
            $crate::types::DeliverReply,
            $crate::types::TestChannel,
            $crate::types::RegisterWebhook,
            $crate::types::TestAiProvider,
            $crate::types::RunBackup,
            $crate::types::RestoreBackup,
            $crate::types::ExportAnalytics,
            $crate::types::RollupAnalytics,
            $crate::types::Sweep,
            $crate::types::Noop,
            $crate::types::ChaosProbe,
        )
    };
}

/// A job type as data: what the list knows about each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobKind {
    pub name: &'static str,
    pub queue: crate::Queue,
    pub max_attempts: u32,
    pub timeout: std::time::Duration,
    pub recorded: bool,
}

/// Every job type, in the list's order.
pub fn all() -> Vec<JobKind> {
    macro_rules! kinds {
        ($($t:path),* $(,)?) => {
            vec![$(JobKind {
                name: <$t as crate::Job>::NAME,
                queue: <$t as crate::Job>::QUEUE,
                max_attempts: <$t as crate::Job>::MAX_ATTEMPTS,
                timeout: <$t as crate::Job>::TIMEOUT,
                recorded: <$t as crate::Job>::RECORDED,
            }),*]
        };
    }
    crate::for_each_job_type!(kinds)
}

/// The job type stored under `name`.
pub fn by_name(name: &str) -> Option<JobKind> {
    all().into_iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_type_module_is_in_the_list_once_under_its_own_name() -> std::io::Result<()> {
        let listed: Vec<&str> = super::all().iter().map(|k| k.name).collect();
        let unique: BTreeSet<&str> = listed.iter().copied().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "a name is listed twice: {listed:?}"
        );
        // Each module file is named after its job (`send_email.rs` holds
        // `send_email`), so a module missing from the list shows up here.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/types");
        let mut modules = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".rs").filter(|s| *s != "mod") {
                modules.insert(stem.to_owned());
            }
        }
        let listed: BTreeSet<String> = unique.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            modules, listed,
            "types/ modules and for_each_job_type! differ"
        );
        Ok(())
    }

    #[test]
    fn stored_names_dispatch_to_their_type() {
        for kind in super::all() {
            assert_eq!(super::by_name(kind.name), Some(kind));
            assert!(kind.max_attempts >= 1, "{} needs an attempt", kind.name);
            assert!(!kind.timeout.is_zero(), "{} needs a timeout", kind.name);
        }
        assert_eq!(super::by_name("no_such_job"), None);
    }
}
