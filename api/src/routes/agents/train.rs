//! `POST /api/v1/agents/{id}/train`: attach documents to an agent and
//! re-index all of its documents (a `train_agent` job; the agent is
//! `TRAINING` while it runs and `agent-updated` events report progress).

use bson::doc;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::Requester;
use aigentable_jobs::types::TrainAgent;
use aigentable_platform::ids::looks_like_id;
use aigentable_platform::model::{Agent, DocumentStatus, KnowledgeDocument};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body_or_default, path_id};
use crate::guard::caller;
use crate::state::app;

/// Most documents attached in one request.
const MAX_DOCUMENTS: usize = 500;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainInput {
    /// Documents of the tenant to attach to the agent first; the agent's
    /// other documents are re-indexed too. Absent or empty: re-index the
    /// agent's documents.
    #[serde(default)]
    pub document_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    /// The job's status (`QUEUED`, or `RUNNING` when a training of this
    /// agent is already under way: that job is returned).
    pub status: String,
    pub agent_id: String,
    pub document_ids: Vec<String>,
}

/// Train an agent (202 with the job): attach `documentIds` (optional) and
/// re-index the agent's documents.
#[endpoint(tags("agents"), security(("bearerAuth" = [])), request_body(content = TrainInput, description = "Optional: documents to attach"), status_codes(202, 400, 404, 409), parameters(("id" = String, Path, description = "Agent id")))]
pub async fn train(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<TrainAccepted>> {
    // The body is optional: an empty one re-indexes what the agent has.
    let input: TrainInput = json_body_or_default(req).await?;
    let who = caller(depot)?;
    let id = path_id(req, "agent")?;
    let state = app(depot);
    let db = &state.platform.db;
    db.scoped::<Agent>(&who.tenant_id)
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;

    if input.document_ids.len() > MAX_DOCUMENTS {
        return Err(ApiError::field(
            "documentIds",
            format!("must list at most {MAX_DOCUMENTS} documents"),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(input.document_ids.len());
    for d in &input.document_ids {
        if !ids.contains(d) {
            ids.push(d.clone());
        }
    }
    // Every id must be a live document of this tenant: checked before
    // anything is queued, so a typo changes nothing.
    let documents = db.scoped::<KnowledgeDocument>(&who.tenant_id);
    let mut unknown = Vec::new();
    for d in &ids {
        let known = looks_like_id(d)
            && documents
                .find_one(doc! { "_id": d, "status": { "$ne": DocumentStatus::Deleting.as_str() } })
                .await?
                .is_some();
        if !known {
            unknown.push(d.clone());
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest {
            message: format!(
                "documentIds contains unknown documents: {}",
                unknown.join(", ")
            ),
            details: serde_json::json!({ "field": "documentIds", "unknown": unknown }),
        });
    }

    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            TrainAgent {
                agent_id: id.clone(),
                document_ids: ids.clone(),
            },
        )
        .await?;
    // A training of this agent already queued or running is returned
    // instead of a second one; documents it does not attach would be lost.
    let queued: Vec<String> = bson::from_bson::<TrainAgent>(job.payload.clone())
        .map(|t| t.document_ids)
        .unwrap_or_default();
    if ids.iter().any(|d| !queued.contains(d)) {
        return Err(ApiError::because(
            Reason::AlreadyRunning,
            format!(
                "agent is already training (job {}); send these documents again when it finishes",
                job.id
            ),
        ));
    }
    tracing::info!(tenant_id = %who.tenant_id, agent_id = %id, job_id = %job.id, documents = ids.len(), "agent training queued");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(TrainAccepted {
        accepted: (&job).into(),
        status: job.status.as_str().to_owned(),
        agent_id: id,
        document_ids: ids,
    }))
}
