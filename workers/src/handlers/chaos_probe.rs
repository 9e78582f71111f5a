//! The chaos benchmark's job: works for a while, then writes down one
//! document per finished run in [`ChaosProbe::RUNS`], which the benchmark
//! counts against the jobs it had accepted.

use std::time::Duration;

use bson::doc;
use serde_json::Value;

use aigentable_jobs::types::ChaosProbe;

use crate::runner::{Handle, JobContext, JobError};

impl Handle for ChaosProbe {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let started = bson::DateTime::now();
        tokio::time::sleep(Duration::from_millis(self.work_ms)).await;
        ctx.state
            .platform
            .db
            .unscoped::<bson::Document>(ChaosProbe::RUNS)
            // One document per attempt: a write retried after a lost answer
            // finds its own document, only another run adds one.
            .insert_one(doc! {
                "_id": format!("{}:{}", ctx.job_id, ctx.attempt),
                "jobId": &ctx.job_id,
                "seq": i64::try_from(self.seq).unwrap_or(i64::MAX),
                "attempt": i64::from(ctx.attempt),
                "pid": i64::from(std::process::id()),
                "startedAt": started,
                "endedAt": bson::DateTime::now(),
            })
            .await
            .or_else(|e| {
                if aigentable_platform::db::is_duplicate_key(&e) {
                    Ok(Default::default())
                } else {
                    Err(JobError::transient(e))
                }
            })?;
        Ok(Value::Null)
    }
}
