//! `train_agent`: attaches documents to an agent and re-indexes all of the
//! agent's documents with the ingestion code itself (so they carry the
//! agent and the tenant's current embedding model). The agent is
//! `TRAINING` meanwhile, with `agent-updated` events for each step, and
//! ends `ACTIVE` (or `INACTIVE` when it is switched off), also when the
//! job fails for good: an agent never stays stuck in `TRAINING`.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::events::{self, RealtimeEvent, names};
use aigentable_jobs::types::{IngestDocument, TrainAgent};
use aigentable_platform::db::PageRequest;
use aigentable_platform::model::{Agent, AgentStatus, DocumentStatus, KnowledgeDocument};

use super::{ingest_document, knowledge};
use crate::runner::{Handle, JobContext, JobError};

/// The status an agent returns to after training.
fn settled(agent: &Agent) -> AgentStatus {
    if agent.is_active {
        AgentStatus::Active
    } else {
        AgentStatus::Inactive
    }
}

async fn announce(ctx: &JobContext, agent: &Agent, training: Value) {
    let event = RealtimeEvent {
        tenant_id: agent.tenant_id.to_string(),
        conversation_id: None,
        event: names::AGENT_UPDATED.to_owned(),
        data: json!({
            "id": agent.id,
            "name": agent.name,
            "status": agent.status.as_str(),
            "isActive": agent.is_active,
            "updatedAt": agent.updated_at,
            "training": training,
        }),
    };
    if let Err(e) = events::publish(&ctx.state.platform.kv, &event).await {
        tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, error = %e, "could not publish agent event");
    }
}

async fn set_status(
    ctx: &JobContext,
    agent_id: &str,
    status: AgentStatus,
) -> Result<Option<Agent>, JobError> {
    ctx.state
        .platform
        .db
        .scoped::<Agent>(&ctx.tenant_id)
        .update_by_id(
            agent_id,
            doc! { "$set": { "status": status.as_str(), "updatedAt": bson::DateTime::now() } },
        )
        .await
        .map_err(JobError::transient)
}

impl Handle for TrainAgent {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let result = train(&self, &ctx).await;
        if let Err(e) = &result {
            let last_attempt =
                matches!(e, JobError::Permanent(_)) || ctx.attempt >= Self::MAX_ATTEMPTS;
            let agents = ctx.state.platform.db.scoped::<Agent>(&ctx.tenant_id);
            if let Ok(Some(agent)) = agents.find_by_id(&self.agent_id).await {
                let status = if last_attempt {
                    settled(&agent)
                } else {
                    // Another attempt follows: still training.
                    AgentStatus::Training
                };
                if let Ok(Some(updated)) = set_status(&ctx, &agent.id, status).await {
                    announce(
                        &ctx,
                        &updated,
                        json!({ "state": if last_attempt { "FAILED" } else { "RETRYING" }, "error": e.to_string() }),
                    )
                    .await;
                }
            }
        }
        result
    }
}

async fn train(job: &TrainAgent, ctx: &JobContext) -> Result<Value, JobError> {
    let db = &ctx.state.platform.db;
    let agents = db.scoped::<Agent>(&ctx.tenant_id);
    let documents = db.scoped::<KnowledgeDocument>(&ctx.tenant_id);
    let agent = agents
        .find_by_id(&job.agent_id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::permanent("the agent no longer exists"))?;

    let mut attached = 0u32;
    for id in &job.document_ids {
        let updated = documents
            .update_one(
                doc! { "_id": id, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "$set": { "agentId": &agent.id, "updatedAt": bson::DateTime::now() } },
            )
            .await
            .map_err(JobError::transient)?;
        if let Some(d) = updated {
            events::document_updated(&ctx.state.platform.kv, &d).await;
            attached += 1;
        }
    }

    let Some(training) = set_status(ctx, &agent.id, AgentStatus::Training).await? else {
        return Err(JobError::permanent("the agent no longer exists"));
    };
    // Every document of the agent, not only the new ones: they all get the
    // tenant's current embedding model.
    let mut ids = Vec::new();
    let mut page = 1;
    loop {
        let (batch, _) = documents
            .find_page(
                doc! { "agentId": &agent.id, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "createdAt": 1, "_id": 1 },
                PageRequest { page, limit: 100 },
            )
            .await
            .map_err(JobError::transient)?;
        if batch.is_empty() {
            break;
        }
        ids.extend(batch.into_iter().map(|d| d.id));
        page += 1;
    }
    let total = ids.len();
    announce(
        ctx,
        &training,
        json!({ "state": "RUNNING", "documentsTotal": total, "documentsDone": 0 }),
    )
    .await;

    let mut chunks = 0u64;
    let mut failed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ingest = IngestDocument {
            document_id: id.clone(),
            agent_id: Some(agent.id.clone()),
            reindex_for: None,
        };
        match ingest_document::ingest(&ingest, ctx).await {
            Ok(result) => chunks += result["chunks"].as_u64().unwrap_or(0),
            // This document cannot be indexed (damaged file, no text): it
            // says why, and the others still train.
            Err(JobError::Permanent(reason)) => {
                knowledge::mark_failed(ctx, id, &reason).await;
                failed.push(json!({ "documentId": id, "error": reason }));
            }
            Err(e) => return Err(e),
        }
        announce(
            ctx,
            &training,
            json!({ "state": "RUNNING", "documentsTotal": total, "documentsDone": i + 1 }),
        )
        .await;
    }

    let current = agents
        .find_by_id(&agent.id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::permanent("the agent no longer exists"))?;
    if let Some(done) = set_status(ctx, &agent.id, settled(&current)).await? {
        announce(
            ctx,
            &done,
            json!({ "state": "DONE", "documentsTotal": total, "documentsDone": total, "failed": failed.len() }),
        )
        .await;
    }
    tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, agent_id = %agent.id, documents = total, attached, chunks, failed = failed.len(), "agent trained");
    Ok(json!({
        "agentId": agent.id,
        "documentsAttached": attached,
        "documents": total,
        "chunks": chunks,
        "failed": failed,
    }))
}
