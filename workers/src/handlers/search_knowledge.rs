//! `search_knowledge`: searches for the api when only the workers hold the
//! vectors (the embedded store), and answers on the request's [`ReplyTo`].
//!
//! [`ReplyTo`]: aigentable_jobs::answer::ReplyTo

use serde_json::Value;

use aigentable_jobs::types::SearchKnowledge;
use aigentable_jobs::types::search_knowledge::KnowledgeHit;

use super::knowledge::retrieve;
use crate::runner::{Handle, JobContext, JobError};

impl Handle for SearchKnowledge {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let answered = search(&self, &ctx).await.map_err(|e| e.to_string());
        self.reply_to
            .send(&ctx.state.platform.kv, &answered)
            .await
            .map_err(JobError::transient)?;
        Ok(Value::Null)
    }
}

async fn search(job: &SearchKnowledge, ctx: &JobContext) -> Result<Vec<KnowledgeHit>, JobError> {
    let limit = usize::try_from(job.limit).unwrap_or(10).clamp(1, 50);
    let hits = retrieve(
        &ctx.state,
        &ctx.tenant_id,
        job.agent_id.as_deref(),
        &job.query,
        limit,
    )
    .await?;
    Ok(hits.iter().map(KnowledgeHit::from).collect())
}
