use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// The chaos benchmark's job: a recorded job (its record lives in MongoDB
/// like a user's) that works for `work_ms` and then writes down that it
/// finished, so that the benchmark can count every run against what was
/// accepted while it kills workers and restarts Redis and MongoDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosProbe {
    /// Sequence number, for the benchmark's bookkeeping.
    pub seq: u64,
    pub work_ms: u64,
}

impl ChaosProbe {
    /// Where runs are written down, one document per finished run.
    pub const RUNS: &'static str = "chaos_runs";
}

impl Job for ChaosProbe {
    const NAME: &'static str = "chaos_probe";
    const QUEUE: Queue = Queue::Bench;
    // Every fault the benchmark injects can interrupt a run; none should
    // exhaust a job's attempts.
    const MAX_ATTEMPTS: u32 = 20;
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// An enqueue retried after an answer lost in an outage finds the job
    /// it already made.
    fn idempotency_key(&self) -> Option<String> {
        Some(format!("chaos-{}", self.seq))
    }
}
