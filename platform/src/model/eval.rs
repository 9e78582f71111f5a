//! Evaluation sets of an agent (question → expected answer cases) and
//! their runs, each run with the agent's configuration as it answered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::TenantOwned;
use crate::ids::TenantId;

pub const SETS: &str = "eval_sets";
pub const RUNS: &str = "eval_runs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalCase {
    pub id: String,
    pub question: String,
    #[serde(default)]
    pub expected_answer: Option<String>,
    /// Phrases a right answer contains.
    #[serde(default)]
    pub expected_facts: Vec<String>,
    /// Documents a right retrieval finds.
    #[serde(default)]
    pub expected_document_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalSet {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub name: String,
    pub cases: Vec<EvalCase>,
    pub created_by: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TenantOwned for EvalSet {
    const COLLECTION: &'static str = SETS;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EvalRunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl EvalRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

/// The agent as it answered a run: what two runs are compared by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSnapshot {
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub personality: String,
    pub instructions: String,
    pub top_k: u32,
    pub score_threshold: f64,
    pub ai_provider_id: Option<String>,
    /// Documents of the agent that were ready when the run started.
    pub ready_documents: u64,
}

/// One case's answer and scores. A score is `None` when the case gives
/// nothing to score it against (no expected documents, no facts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    pub case_id: String,
    pub question: String,
    pub answer: String,
    /// Distinct documents of the retrieved passages, best first.
    pub retrieved_document_ids: Vec<String>,
    pub retrieval_hit: Option<bool>,
    pub reciprocal_rank: Option<f64>,
    pub facts_found: Vec<String>,
    pub facts_missing: Vec<String>,
    pub fact_score: Option<f64>,
    /// Share of the expected answer's words found in the answer.
    pub answer_recall: Option<f64>,
    /// Share of the answer's sentences backed by a retrieved passage.
    pub grounding: Option<f64>,
    pub fallback: bool,
    pub latency_ms: u64,
    pub tokens: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalTotals {
    pub cases: u64,
    pub retrieval_hit_rate: Option<f64>,
    pub mrr: Option<f64>,
    pub fact_score: Option<f64>,
    pub answer_recall: Option<f64>,
    pub grounding: Option<f64>,
    pub fallbacks: u64,
    pub avg_latency_ms: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalRun {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    pub agent_id: String,
    pub eval_set_id: String,
    pub job_id: String,
    pub status: EvalRunStatus,
    pub agent: AgentSnapshot,
    #[serde(default)]
    pub results: Vec<CaseResult>,
    #[serde(default)]
    pub totals: Option<EvalTotals>,
    #[serde(default)]
    pub error: Option<String>,
    pub created_by: String,
    #[serde(with = "crate::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::model::bson_datetime_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl TenantOwned for EvalRun {
    const COLLECTION: &'static str = RUNS;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}
