//! The benchmark's job: does nothing, so that a benchmark measures the
//! queue's own cost. A job whose id starts with [`PROBE_PREFIX`] also
//! publishes its id on [`probe_channel`] when it starts, which is how the
//! benchmark measures enqueue-to-start latency against a real worker
//! process; ordinary no-op jobs touch nothing.

use serde_json::Value;

use aigentable_jobs::types::Noop;

use crate::runner::{Handle, JobContext, JobError};

pub const PROBE_PREFIX: &str = "probe-";

/// The channel latency probes report on, in a namespace.
pub fn probe_channel(namespace: &str) -> String {
    format!("{namespace}:bench:started")
}

impl Handle for Noop {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        if ctx.job_id.starts_with(PROBE_PREFIX) {
            let kv = &ctx.state.platform.kv;
            let mut conn = kv.conn();
            redis::cmd("PUBLISH")
                .arg(probe_channel(kv.namespace()))
                .arg(&ctx.job_id)
                .query_async::<()>(&mut conn)
                .await
                .map_err(JobError::transient)?;
        }
        Ok(Value::Null)
    }
}
