//! `GET /api/v1/search/documents`: passages of the knowledge base.
//!
//! How the api reaches the vectors: with `QDRANT_URL` it queries the Qdrant
//! server directly; otherwise the vectors live in the workers' embedded
//! store, so the api enqueues a `search_knowledge` job and waits (at most
//! [`SEARCH_WAIT`]) for the worker's answer on its [`ReplyTo`]; no answer
//! in time is a 504.

use std::time::Duration;

use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::Requester;
use aigentable_jobs::answer::ReplyTo;
use aigentable_jobs::types::SearchKnowledge;
use aigentable_jobs::types::search_knowledge::KnowledgeHit;
use aigentable_platform::ids::looks_like_id;
use aigentable_platform::llm::index;
use aigentable_platform::model::Agent;

use crate::error::{ApiError, ApiResult};
use crate::extract::{query, query_string};
use crate::guard::caller;
use crate::state::app;

pub const SEARCH_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub document_id: String,
    pub document_name: String,
    pub agent_id: Option<String>,
    pub chunk_index: u32,
    /// 1-based page, for PDFs.
    pub page: Option<u32>,
    /// Sheet name, for spreadsheets.
    pub sheet: Option<String>,
    /// The matching passage.
    pub snippet: String,
    /// Fused relevance (reciprocal rank fusion); higher is better.
    pub score: f32,
}

impl From<KnowledgeHit> for SearchHit {
    fn from(hit: KnowledgeHit) -> Self {
        Self {
            document_id: hit.document_id,
            document_name: hit.document_name,
            agent_id: hit.agent_id,
            chunk_index: hit.chunk_index,
            page: hit.page,
            sheet: hit.sheet,
            snippet: hit.snippet,
            score: hit.score,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub query: String,
    pub results: Vec<SearchHit>,
}

/// Search the knowledge base (`q`, optional `agentId`, `limit` 1 to 50, default 5).
#[endpoint(
    tags("search"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 404, 504),
    parameters(
        ("q" = String, Query, description = "What to look for"),
        ("agentId" = Option<String>, Query, description = "Only this agent's documents"),
        ("limit" = Option<u32>, Query, description = "1 to 50 passages (default 5)"),
    )
)]
pub async fn documents(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<SearchResults>> {
    let who = caller(depot)?;
    let q = query_string(req, "q", 500)?.ok_or_else(|| ApiError::field("q", "is required"))?;
    let limit: u32 = query(req, "limit")?.unwrap_or(5);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 50"));
    }
    let agent_id = query_string(req, "agentId", 64)?;
    let state = app(depot);
    if let Some(agent) = &agent_id {
        let exists = looks_like_id(agent)
            && state
                .platform
                .db
                .scoped::<Agent>(&who.tenant_id)
                .find_by_id(agent)
                .await?
                .is_some();
        if !exists {
            return Err(ApiError::NotFound("agent"));
        }
    }

    if let Some(store) = &state.vectors {
        let hits = index::search(
            &state.platform,
            store.as_ref(),
            &who.tenant_id,
            agent_id.as_deref(),
            &q,
            limit as usize,
        )
        .await
        .map_err(|e| match e {
            index::SearchError::Db(e) => ApiError::from(e),
            index::SearchError::Vectors(e) => ApiError::internal(e),
        })?;
        return Ok(Json(SearchResults {
            query: q,
            results: hits
                .iter()
                .map(|h| SearchHit::from(KnowledgeHit::from(h)))
                .collect(),
        }));
    }

    let kv = &state.platform.kv;
    let reply_to = ReplyTo::new(kv, "search");
    state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            SearchKnowledge {
                query: q.clone(),
                agent_id,
                limit,
                reply_to: reply_to.clone(),
            },
        )
        .await?;
    let answer = reply_to
        .wait::<Vec<KnowledgeHit>>(kv, SEARCH_WAIT)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::Timeout(
                "the knowledge base did not answer in time; are the workers running?".to_owned(),
            )
        })?;
    let hits = answer.map_err(ApiError::Unavailable)?;
    Ok(Json(SearchResults {
        query: q,
        results: hits.into_iter().map(SearchHit::from).collect(),
    }))
}

pub fn router() -> Router {
    Router::new().push(Router::with_path("search/documents").get(documents))
}
