use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// Does nothing: measures the queue's own overhead in benchmarks and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Noop {
    /// Sequence number, for the benchmark's bookkeeping.
    pub seq: u64,
}

impl Job for Noop {
    const NAME: &'static str = "noop";
    const QUEUE: Queue = Queue::Bench;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(10);
    const RECORDED: bool = false;
}
