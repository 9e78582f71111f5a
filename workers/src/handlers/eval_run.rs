//! `eval_run`: answers every case of an evaluation set the way a customer
//! would be answered (retrieval, then the provider or the retrieval-only
//! responder; nothing stored in conversations), scores each answer and
//! writes results and totals onto the run. Progress goes out as
//! `job-updated`; a retried attempt starts the cases over.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::types::EvalRun as EvalRunJob;
use aigentable_platform::evals::{self, Answered};
use aigentable_platform::model::Agent;
use aigentable_platform::model::eval::{EvalRun, EvalRunStatus, EvalSet};

use super::generate_reply::compose::compose;
use crate::runner::{Handle, JobContext, JobError};

impl Handle for EvalRunJob {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let db = &ctx.state.platform.db;
        let runs = db.scoped::<EvalRun>(&ctx.tenant_id);
        let Some(run) = runs
            .update_one(
                doc! { "_id": &self.run_id, "status": { "$in": ["QUEUED", "RUNNING"] } },
                doc! { "$set": { "status": EvalRunStatus::Running.as_str() } },
            )
            .await
            .map_err(JobError::transient)?
        else {
            return Ok(json!({ "skipped": "the run no longer exists or already ended" }));
        };
        let set = db
            .scoped::<EvalSet>(&ctx.tenant_id)
            .find_by_id(&self.eval_set_id)
            .await
            .map_err(JobError::transient)?;
        let agent = db
            .scoped::<Agent>(&ctx.tenant_id)
            .find_by_id(&self.agent_id)
            .await
            .map_err(JobError::transient)?;
        let (Some(set), Some(agent)) = (set, agent) else {
            let why = "the evaluation set or its agent was deleted";
            fail(&ctx, &run, why).await?;
            return Err(JobError::permanent(why));
        };
        let total = set.cases.len().max(1);
        let mut results = Vec::with_capacity(set.cases.len());
        for (i, case) in set.cases.iter().enumerate() {
            if ctx.cancelled().await {
                return Ok(json!({ "cancelled": true, "answered": i }));
            }
            let answer = match compose(&ctx, &agent, Vec::new(), &case.question, "eval", None).await
            {
                Ok(a) => a,
                Err(e) => {
                    // The last try: the run says why instead of staying RUNNING.
                    let last = matches!(e, JobError::Permanent(_))
                        || ctx.attempt >= EvalRunJob::MAX_ATTEMPTS;
                    if last {
                        fail(&ctx, &run, &format!("case {}: {e}", i + 1)).await?;
                    }
                    return Err(e);
                }
            };
            results.push(evals::score(
                case,
                &Answered {
                    answer: answer.content,
                    passages: answer.passages,
                    fallback: answer.fallback.is_some(),
                    latency_ms: answer.latency_ms,
                    tokens: answer.usage.map(|u| u.total_tokens),
                },
            ));
            let pct = u8::try_from((i + 1) * 100 / total).unwrap_or(100);
            ctx.progress(pct.min(99)).await;
        }
        let totals = evals::totals(&results);
        let stored = runs
            .update_one(
                doc! { "_id": &run.id, "status": EvalRunStatus::Running.as_str() },
                doc! { "$set": {
                    "status": EvalRunStatus::Succeeded.as_str(),
                    "results": bson::to_bson(&results).map_err(JobError::permanent)?,
                    "totals": bson::to_bson(&totals).map_err(JobError::permanent)?,
                    "finishedAt": bson::DateTime::now(),
                } },
            )
            .await
            .map_err(JobError::transient)?;
        if stored.is_none() {
            return Ok(json!({ "skipped": "the run was deleted while it ran" }));
        }
        tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, run_id = %run.id, cases = results.len(), "evaluation run scored");
        Ok(json!({
            "runId": run.id,
            "evalSetId": set.id,
            "totals": serde_json::to_value(&totals).map_err(JobError::permanent)?,
        }))
    }
}

async fn fail(ctx: &JobContext, run: &EvalRun, why: &str) -> Result<(), JobError> {
    ctx.state
        .platform
        .db
        .scoped::<EvalRun>(&ctx.tenant_id)
        .update_one(
            doc! { "_id": &run.id },
            doc! { "$set": {
                "status": EvalRunStatus::Failed.as_str(),
                "error": why,
                "finishedAt": bson::DateTime::now(),
            } },
        )
        .await
        .map_err(JobError::transient)?;
    Ok(())
}
