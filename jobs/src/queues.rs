//! The queues jobs travel on. Several job types may share a queue; a
//! worker process serves a set of queues (`--queues`), so queues are how
//! operators split work between processes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// Customer messages from webhooks and the widget.
    Inbound,
    /// Answers to customers and agent tests.
    Replies,
    /// Messages sent to channel providers.
    Outbound,
    Emails,
    /// Provider checks and webhook registration.
    Integrations,
    /// Knowledge search for the api.
    Search,
    /// Document extraction, indexing and purging.
    Ingest,
    Training,
    /// Sweeps, rollups, exports, backups.
    Maintenance,
    /// No-op jobs of the queue benchmark; served only when named.
    Bench,
}

impl Queue {
    pub const ALL: [Queue; 10] = [
        Queue::Outbound,
        Queue::Maintenance,
        Queue::Replies,
        Queue::Ingest,
        Queue::Inbound,
        Queue::Search,
        Queue::Emails,
        Queue::Integrations,
        Queue::Training,
        Queue::Bench,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Queue::Inbound => "inbound",
            Queue::Replies => "replies",
            Queue::Outbound => "outbound",
            Queue::Emails => "emails",
            Queue::Integrations => "integrations",
            Queue::Search => "search",
            Queue::Ingest => "ingest",
            Queue::Training => "training",
            Queue::Maintenance => "maintenance",
            Queue::Bench => "bench",
        }
    }

    /// The queues whose jobs search or write the vector store.
    pub const KNOWLEDGE: [Queue; 4] = [
        Queue::Replies,
        Queue::Search,
        Queue::Ingest,
        Queue::Training,
    ];

    pub const fn needs_vectors(self) -> bool {
        matches!(
            self,
            Queue::Replies | Queue::Search | Queue::Ingest | Queue::Training
        )
    }

    /// Whether a process serving `queues` (every default one when empty)
    /// needs the vector store.
    pub fn needs_vectors_any(queues: &[Queue]) -> bool {
        if queues.is_empty() {
            Self::served_by_default().any(Queue::needs_vectors)
        } else {
            queues.iter().any(|q| q.needs_vectors())
        }
    }

    /// Served only when a process names it (`--queues bench`).
    pub const fn opt_in(self) -> bool {
        matches!(self, Queue::Bench)
    }

    /// The queues a worker process serves when none are named.
    pub fn served_by_default() -> impl Iterator<Item = Queue> {
        Self::ALL.into_iter().filter(|q| !q.opt_in())
    }

    /// Jobs run at the same time per worker process and job type, unless
    /// configured (`WORKER_CONCURRENCY_<QUEUE>` or `WORKER_CONCURRENCY`).
    /// Waiting on providers is cheap, so those queues run wide; extraction
    /// and backups use the CPU and disk, so they run narrow.
    pub const fn default_concurrency(self) -> usize {
        match self {
            Queue::Replies | Queue::Outbound => 32,
            Queue::Inbound | Queue::Search => 16,
            Queue::Emails | Queue::Integrations => 8,
            Queue::Ingest | Queue::Maintenance => 2,
            Queue::Training => 1,
            // No-op jobs cost nothing; a wide window measures the queue itself.
            Queue::Bench => 64,
        }
    }

    /// `WORKER_CONCURRENCY_<QUEUE>`.
    pub fn concurrency_variable(self) -> String {
        format!("WORKER_CONCURRENCY_{}", self.as_str().to_uppercase())
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue name that is not one of [`Queue::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown queue '{name}'; known queues: {known}")]
pub struct UnknownQueue {
    pub name: String,
    pub known: String,
}

impl FromStr for Queue {
    type Err = UnknownQueue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Queue::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| UnknownQueue {
                name: s.to_owned(),
                known: Queue::ALL.map(Queue::as_str).join(","),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn only_the_knowledge_queues_open_the_vector_store() {
        assert!(!Queue::needs_vectors_any(&[Queue::Bench]));
        assert!(!Queue::needs_vectors_any(&[
            Queue::Inbound,
            Queue::Outbound,
            Queue::Emails,
            Queue::Integrations,
            Queue::Maintenance,
        ]));
        assert!(Queue::needs_vectors_any(&[]), "every default queue");
        for q in Queue::ALL {
            assert_eq!(q.needs_vectors(), Queue::KNOWLEDGE.contains(&q), "{q}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for q in Queue::ALL {
            assert_eq!(q.as_str().parse::<Queue>(), Ok(q));
            assert_eq!(
                serde_json::to_value(q).ok(),
                Some(serde_json::Value::String(q.as_str().to_owned()))
            );
        }
        let err = "bulk".parse::<Queue>().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("'bulk'") && e.contains("replies")),
            "{err:?}"
        );
        assert!(Queue::served_by_default().all(|q| q != Queue::Bench));
        assert_eq!(Queue::served_by_default().count(), Queue::ALL.len() - 1);
    }
}
