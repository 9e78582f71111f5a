//! `/api/v1/agents/{id}/evals`: an agent's evaluation sets (question →
//! expected answer, facts and source documents) and their runs. A run is
//! an `eval_run` job that answers every case through the reply path and
//! scores it; two runs of a set compare case by case.

use bson::doc;
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::Requester;
use aigentable_jobs::types::EvalRun as EvalRunJob;
use aigentable_platform::domain::Name;
use aigentable_platform::evals::case_score;
use aigentable_platform::ids::{looks_like_id, new_id};
use aigentable_platform::model::eval::{
    AgentSnapshot, CaseResult, EvalCase, EvalRun, EvalRunStatus, EvalSet, EvalTotals,
};
use aigentable_platform::model::{Agent, DocumentStatus, KnowledgeDocument};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, pagination, path_id, path_id_named, query_string};
use crate::guard::{Caller, caller};
use crate::state::{AppState, app};
use crate::views::Pagination;

pub const MAX_CASES: usize = 200;
const MAX_QUESTION_CHARS: usize = 2_000;
const MAX_ANSWER_CHARS: usize = 4_000;
const MAX_FACTS: usize = 20;
const MAX_FACT_CHARS: usize = 200;
const MAX_DOCUMENTS: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalCaseInput {
    /// A case id of this set to keep (`PUT`): runs compare cases by id.
    pub id: Option<String>,
    /// 1 to 2000 characters.
    pub question: String,
    /// What a right answer says; scored as the share of its words the
    /// answer contains. At most 4000 characters.
    pub expected_answer: Option<String>,
    /// Phrases a right answer contains (at most 20, 200 characters each).
    #[serde(default)]
    pub expected_facts: Vec<String>,
    /// Documents of the tenant a right retrieval finds (at most 20).
    #[serde(default)]
    pub expected_document_ids: Vec<String>,
}

/// `POST` needs `name` and `cases`; `PUT` changes what is given (`cases`
/// replaces every case).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalSetInput {
    /// 1 to 100 characters.
    pub name: Option<String>,
    /// 1 to 200 cases.
    pub cases: Option<Vec<EvalCaseInput>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalCaseView {
    pub id: String,
    pub question: String,
    pub expected_answer: Option<String>,
    pub expected_facts: Vec<String>,
    pub expected_document_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalSetView {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    pub cases: Vec<EvalCaseView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&EvalSet> for EvalSetView {
    fn from(s: &EvalSet) -> Self {
        Self {
            id: s.id.clone(),
            agent_id: s.agent_id.clone(),
            name: s.name.clone(),
            cases: s
                .cases
                .iter()
                .map(|c| EvalCaseView {
                    id: c.id.clone(),
                    question: c.question.clone(),
                    expected_answer: c.expected_answer.clone(),
                    expected_facts: c.expected_facts.clone(),
                    expected_document_ids: c.expected_document_ids.clone(),
                })
                .collect(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvalSetList {
    pub evals: Vec<EvalSetView>,
    pub pagination: Pagination,
}

/// The agent's configuration when the run started.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSnapshotView {
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub personality: String,
    pub instructions: String,
    pub top_k: u32,
    pub score_threshold: f64,
    /// The provider set on the agent; `null`: the tenant's default, or
    /// the retrieval-only responder when it has none.
    pub ai_provider_id: Option<String>,
    pub ready_documents: u64,
}

/// Scores are 0 to 1, `null` when the case gives nothing to score against.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseResultView {
    pub case_id: String,
    pub question: String,
    pub answer: String,
    /// Documents of the retrieved passages, best first.
    pub retrieved_document_ids: Vec<String>,
    /// An expected document was retrieved.
    pub retrieval_hit: Option<bool>,
    /// 1 / rank of the first expected document (0: not retrieved).
    pub reciprocal_rank: Option<f64>,
    pub facts_found: Vec<String>,
    pub facts_missing: Vec<String>,
    /// Share of the expected facts the answer contains.
    pub fact_score: Option<f64>,
    /// Share of the expected answer's words the answer contains.
    pub answer_recall: Option<f64>,
    /// Share of the answer's sentences backed by a retrieved passage.
    pub grounding: Option<f64>,
    /// The agent's fallback message was the answer.
    pub fallback: bool,
    pub latency_ms: u64,
    /// Tokens the provider counted; `null` without a provider.
    pub tokens: Option<u32>,
}

impl From<&CaseResult> for CaseResultView {
    fn from(r: &CaseResult) -> Self {
        Self {
            case_id: r.case_id.clone(),
            question: r.question.clone(),
            answer: r.answer.clone(),
            retrieved_document_ids: r.retrieved_document_ids.clone(),
            retrieval_hit: r.retrieval_hit,
            reciprocal_rank: r.reciprocal_rank,
            facts_found: r.facts_found.clone(),
            facts_missing: r.facts_missing.clone(),
            fact_score: r.fact_score,
            answer_recall: r.answer_recall,
            grounding: r.grounding,
            fallback: r.fallback,
            latency_ms: r.latency_ms,
            tokens: r.tokens,
        }
    }
}

/// Each score averaged over the cases that have it (`null`: none has).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalTotalsView {
    pub cases: u64,
    pub retrieval_hit_rate: Option<f64>,
    /// Mean reciprocal rank.
    pub mrr: Option<f64>,
    pub fact_score: Option<f64>,
    pub answer_recall: Option<f64>,
    pub grounding: Option<f64>,
    pub fallbacks: u64,
    pub avg_latency_ms: u64,
    pub total_tokens: u64,
}

impl From<&EvalTotals> for EvalTotalsView {
    fn from(t: &EvalTotals) -> Self {
        Self {
            cases: t.cases,
            retrieval_hit_rate: t.retrieval_hit_rate,
            mrr: t.mrr,
            fact_score: t.fact_score,
            answer_recall: t.answer_recall,
            grounding: t.grounding,
            fallbacks: t.fallbacks,
            avg_latency_ms: t.avg_latency_ms,
            total_tokens: t.total_tokens,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalRunView {
    pub id: String,
    pub agent_id: String,
    pub eval_set_id: String,
    pub job_id: String,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub agent: AgentSnapshotView,
    /// Once `SUCCEEDED`.
    pub totals: Option<EvalTotalsView>,
    /// Per case, once `SUCCEEDED` (empty in listings).
    pub results: Vec<CaseResultView>,
    /// Why a `FAILED` run failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl EvalRunView {
    fn new(r: &EvalRun, with_results: bool) -> Self {
        let a = &r.agent;
        Self {
            id: r.id.clone(),
            agent_id: r.agent_id.clone(),
            eval_set_id: r.eval_set_id.clone(),
            job_id: r.job_id.clone(),
            status: r.status.as_str().to_owned(),
            agent: AgentSnapshotView {
                model: a.model.clone(),
                temperature: a.temperature,
                max_tokens: a.max_tokens,
                personality: a.personality.clone(),
                instructions: a.instructions.clone(),
                top_k: a.top_k,
                score_threshold: a.score_threshold,
                ai_provider_id: a.ai_provider_id.clone(),
                ready_documents: a.ready_documents,
            },
            totals: r.totals.as_ref().map(EvalTotalsView::from),
            results: if with_results {
                r.results.iter().map(CaseResultView::from).collect()
            } else {
                Vec::new()
            },
            error: r.error.clone(),
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvalRunList {
    pub runs: Vec<EvalRunView>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvalRunAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    pub status: String,
    pub run: EvalRunView,
}

fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Where a case's field is in a JSON body: `cases[2].question`.
pub(super) fn json_place(i: usize, field: &str) -> String {
    format!("cases[{i}].{field}")
}

/// Validates `cases` into stored cases: ids of `kept` cases stay, expected
/// documents must be the tenant's. `place` names a case's field in errors.
pub(super) async fn parse_cases(
    state: &AppState,
    who: &Caller,
    input: &[EvalCaseInput],
    kept: &[EvalCase],
    place: &(dyn Fn(usize, &str) -> String + Sync),
) -> ApiResult<Vec<EvalCase>> {
    if input.is_empty() || input.len() > MAX_CASES {
        return Err(ApiError::field(
            "cases",
            format!("must have 1 to {MAX_CASES} cases"),
        ));
    }
    let mut cases = Vec::with_capacity(input.len());
    let mut documents: Vec<String> = Vec::new();
    for (i, c) in input.iter().enumerate() {
        let at = |f: &str| place(i, f);
        let question = text(&at("question"), &c.question, MAX_QUESTION_CHARS)?;
        let expected_answer = c
            .expected_answer
            .as_deref()
            .map(|a| text(&at("expectedAnswer"), a, MAX_ANSWER_CHARS))
            .transpose()?;
        if c.expected_facts.len() > MAX_FACTS {
            return Err(ApiError::field(
                &at("expectedFacts"),
                format!("must list at most {MAX_FACTS} facts"),
            ));
        }
        let expected_facts = c
            .expected_facts
            .iter()
            .enumerate()
            .map(|(j, f)| text(&format!("{}[{j}]", at("expectedFacts")), f, MAX_FACT_CHARS))
            .collect::<ApiResult<Vec<_>>>()?;
        if c.expected_document_ids.len() > MAX_DOCUMENTS {
            return Err(ApiError::field(
                &at("expectedDocumentIds"),
                format!("must list at most {MAX_DOCUMENTS} documents"),
            ));
        }
        let mut expected_document_ids: Vec<String> = Vec::new();
        for d in &c.expected_document_ids {
            if !expected_document_ids.contains(d) {
                expected_document_ids.push(d.clone());
            }
            if !documents.contains(d) {
                documents.push(d.clone());
            }
        }
        let id = c
            .id
            .as_ref()
            .filter(|id| {
                kept.iter().any(|k| &k.id == *id) && !cases.iter().any(|x: &EvalCase| &x.id == *id)
            })
            .cloned()
            .unwrap_or_else(new_id);
        cases.push(EvalCase {
            id,
            question,
            expected_answer,
            expected_facts,
            expected_document_ids,
        });
    }
    let known: Vec<String> = if documents.iter().all(|d| looks_like_id(d)) && !documents.is_empty()
    {
        state
            .platform
            .db
            .scoped::<KnowledgeDocument>(&who.tenant_id)
            .find_sorted(
                doc! { "_id": { "$in": &documents }, "status": { "$ne": DocumentStatus::Deleting.as_str() } },
                doc! { "_id": 1 },
                u64::try_from(documents.len()).unwrap_or(u64::MAX),
            )
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect()
    } else {
        Vec::new()
    };
    let unknown: Vec<String> = documents
        .into_iter()
        .filter(|d| !known.contains(d))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest {
            message: format!(
                "expectedDocumentIds names unknown documents: {}",
                unknown.join(", ")
            ),
            details: serde_json::json!({ "field": "cases[].expectedDocumentIds", "unknown": unknown }),
        });
    }
    Ok(cases)
}

pub(super) async fn agent_of(state: &AppState, who: &Caller, req: &Request) -> ApiResult<Agent> {
    let id = path_id(req, "agent")?;
    state
        .platform
        .db
        .scoped::<Agent>(&who.tenant_id)
        .find_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("agent"))
}

async fn set_of(state: &AppState, who: &Caller, req: &Request) -> ApiResult<EvalSet> {
    let agent_id = path_id(req, "agent")?;
    let id = path_id_named(req, "evalId", "evaluation set")?;
    state
        .platform
        .db
        .scoped::<EvalSet>(&who.tenant_id)
        .find_one(doc! { "_id": &id, "agentId": &agent_id })
        .await?
        .ok_or(ApiError::NotFound("evaluation set"))
}

/// An agent's evaluation sets, newest first.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn list_sets(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<EvalSetList>> {
    let who = caller(depot)?;
    let state = app(depot);
    let page = pagination(req)?;
    let agent = agent_of(state, who, req).await?;
    let (sets, total) = state
        .platform
        .db
        .scoped::<EvalSet>(&who.tenant_id)
        .find_page(
            doc! { "agentId": &agent.id },
            doc! { "createdAt": -1, "_id": -1 },
            page,
        )
        .await?;
    Ok(Json(EvalSetList {
        evals: sets.iter().map(EvalSetView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// Create an evaluation set `{name, cases}` (201 with the set).
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    request_body = EvalSetInput,
    status_codes(201, 400, 404),
    parameters(("id" = String, Path, description = "Agent id"))
)]
pub async fn create_set(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<EvalSetView>> {
    let input: EvalSetInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    let agent = agent_of(state, who, req).await?;
    let name = Name::parse(
        "name",
        input
            .name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
        100,
    )?
    .into_inner();
    let cases = parse_cases(
        state,
        who,
        input
            .cases
            .as_deref()
            .ok_or_else(|| ApiError::field("cases", "is required"))?,
        &[],
        &json_place,
    )
    .await?;
    let set = insert_set(state, who, &agent, name, cases).await?;
    res.status_code(StatusCode::CREATED);
    Ok(Json((&set).into()))
}

pub(super) async fn insert_set(
    state: &AppState,
    who: &Caller,
    agent: &Agent,
    name: String,
    cases: Vec<EvalCase>,
) -> ApiResult<EvalSet> {
    let now = Utc::now();
    let set = EvalSet {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        agent_id: agent.id.clone(),
        name,
        cases,
        created_by: who.user_id().to_string(),
        created_at: now,
        updated_at: now,
    };
    state
        .platform
        .db
        .scoped::<EvalSet>(&who.tenant_id)
        .insert(&set)
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, agent_id = %agent.id, eval_set_id = %set.id, cases = set.cases.len(), "evaluation set created");
    Ok(set)
}

/// One evaluation set.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(200, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
    )
)]
pub async fn get_set(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<EvalSetView>> {
    let who = caller(depot)?;
    let set = set_of(app(depot), who, req).await?;
    Ok(Json((&set).into()))
}

/// Change an evaluation set's name or replace its cases (a case sent
/// with the `id` of one of the set's cases keeps it).
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    request_body = EvalSetInput,
    status_codes(200, 400, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
    )
)]
pub async fn update_set(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<EvalSetView>> {
    let input: EvalSetInput = json_body(req).await?;
    let who = caller(depot)?;
    let state = app(depot);
    let current = set_of(state, who, req).await?;
    let mut set = doc! {};
    if let Some(name) = &input.name {
        set.insert("name", Name::parse("name", name, 100)?.into_inner());
    }
    if let Some(cases) = &input.cases {
        let cases = parse_cases(state, who, cases, &current.cases, &json_place).await?;
        set.insert("cases", bson::to_bson(&cases).map_err(ApiError::internal)?);
    }
    if set.is_empty() {
        return Ok(Json((&current).into()));
    }
    set.insert("updatedAt", bson::DateTime::now());
    let updated = state
        .platform
        .db
        .scoped::<EvalSet>(&who.tenant_id)
        .update_by_id(&current.id, doc! { "$set": set })
        .await?
        .ok_or(ApiError::NotFound("evaluation set"))?;
    Ok(Json((&updated).into()))
}

/// Delete an evaluation set and its runs.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(204, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
    )
)]
pub async fn delete_set(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let who = caller(depot)?;
    let state = app(depot);
    let set = set_of(state, who, req).await?;
    let db = &state.platform.db;
    db.scoped::<EvalSet>(&who.tenant_id)
        .delete_by_id(&set.id)
        .await?;
    let runs = db
        .scoped::<EvalRun>(&who.tenant_id)
        .delete_many(doc! { "evalSetId": &set.id })
        .await?;
    tracing::info!(tenant_id = %who.tenant_id, eval_set_id = %set.id, runs, "evaluation set deleted");
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Run an evaluation set against the agent as it is now: 202 with the
/// `eval_run` job and the run (`QUEUED`); its results arrive on the run.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(202, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
    )
)]
pub async fn start_run(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<EvalRunAccepted>> {
    let who = caller(depot)?;
    let state = app(depot);
    let set = set_of(state, who, req).await?;
    let agent = agent_of(state, who, req).await?;
    let ready_documents = state
        .platform
        .db
        .scoped::<KnowledgeDocument>(&who.tenant_id)
        .count(doc! { "agentId": &agent.id, "status": DocumentStatus::Ready.as_str() })
        .await?;
    let mut run = EvalRun {
        id: new_id(),
        tenant_id: who.tenant_id.clone(),
        agent_id: agent.id.clone(),
        eval_set_id: set.id.clone(),
        // Set once the job is queued, below.
        job_id: String::new(),
        status: EvalRunStatus::Queued,
        agent: AgentSnapshot {
            model: agent.model.clone(),
            temperature: agent.temperature,
            max_tokens: agent.max_tokens,
            personality: agent.personality.clone(),
            instructions: agent.instructions.clone(),
            top_k: agent.retrieval.top_k,
            score_threshold: agent.retrieval.score_threshold,
            ai_provider_id: agent.ai_provider_id.clone(),
            ready_documents,
        },
        results: Vec::new(),
        totals: None,
        error: None,
        created_by: who.user_id().to_string(),
        created_at: Utc::now(),
        finished_at: None,
    };
    // The run exists before its job, so that the worker always finds it.
    let runs = state.platform.db.scoped::<EvalRun>(&who.tenant_id);
    runs.insert(&run).await?;
    let job = match state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            EvalRunJob {
                run_id: run.id.clone(),
                eval_set_id: set.id.clone(),
                agent_id: agent.id.clone(),
            },
        )
        .await
    {
        Ok(job) => job,
        Err(e) => {
            if let Err(d) = runs.delete_by_id(&run.id).await {
                tracing::warn!(tenant_id = %who.tenant_id, run_id = %run.id, error = %d, "run of a job that was not queued left behind");
            }
            return Err(e.into());
        }
    };
    runs.update_by_id(&run.id, doc! { "$set": { "jobId": &job.id } })
        .await?;
    run.job_id = job.id.clone();
    tracing::info!(tenant_id = %who.tenant_id, eval_set_id = %set.id, run_id = %run.id, job_id = %job.id, "evaluation run queued");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(EvalRunAccepted {
        accepted: (&job).into(),
        status: job.status.as_str().to_owned(),
        run: EvalRunView::new(&run, false),
    }))
}

/// The runs of an evaluation set, newest first (totals, no per-case results).
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
    )
)]
pub async fn list_runs(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<EvalRunList>> {
    let who = caller(depot)?;
    let state = app(depot);
    let page = pagination(req)?;
    let set = set_of(state, who, req).await?;
    let (runs, total) = state
        .platform
        .db
        .scoped::<EvalRun>(&who.tenant_id)
        .find_page(
            doc! { "evalSetId": &set.id },
            doc! { "createdAt": -1, "_id": -1 },
            page,
        )
        .await?;
    Ok(Json(EvalRunList {
        runs: runs.iter().map(|r| EvalRunView::new(r, false)).collect(),
        pagination: Pagination::new(page, total),
    }))
}

async fn run_of(state: &AppState, who: &Caller, set: &EvalSet, id: &str) -> ApiResult<EvalRun> {
    if !looks_like_id(id) {
        return Err(ApiError::NotFound("evaluation run"));
    }
    state
        .platform
        .db
        .scoped::<EvalRun>(&who.tenant_id)
        .find_one(doc! { "_id": id, "evalSetId": &set.id })
        .await?
        .ok_or(ApiError::NotFound("evaluation run"))
}

/// One run with its per-case results.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(200, 404),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
        ("runId" = String, Path, description = "Run id"),
    )
)]
pub async fn get_run(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<EvalRunView>> {
    let who = caller(depot)?;
    let state = app(depot);
    let set = set_of(state, who, req).await?;
    let id = path_id_named(req, "runId", "evaluation run")?;
    let run = run_of(state, who, &set, &id).await?;
    Ok(Json(EvalRunView::new(&run, true)))
}

/// One case in two runs: `change` is `better`, `worse`, `same` or
/// `not comparable` (a case missing or unscored in either run).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseComparison {
    pub case_id: String,
    pub question: String,
    /// The case's mean score in run `a`, 0 to 1.
    pub score_a: Option<f64>,
    pub score_b: Option<f64>,
    pub change: String,
    pub answer_a: Option<String>,
    pub answer_b: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunComparison {
    pub a: EvalRunView,
    pub b: EvalRunView,
    pub cases: Vec<CaseComparison>,
    pub better: u64,
    pub worse: u64,
    pub same: u64,
}

/// Two runs of a set side by side (`?a=&b=` run ids, both `SUCCEEDED`):
/// per case its score in each and whether `b` did better or worse.
#[endpoint(
    tags("evals"),
    security(("bearerAuth" = [])),
    status_codes(200, 400, 404, 409),
    parameters(
        ("id" = String, Path, description = "Agent id"),
        ("evalId" = String, Path, description = "Evaluation set id"),
        ("a" = String, Query, description = "The earlier run's id"),
        ("b" = String, Query, description = "The later run's id"),
    )
)]
pub async fn compare_runs(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<RunComparison>> {
    let who = caller(depot)?;
    let state = app(depot);
    let set = set_of(state, who, req).await?;
    let a_id = query_string(req, "a", 64)?.ok_or_else(|| ApiError::field("a", "is required"))?;
    let b_id = query_string(req, "b", 64)?.ok_or_else(|| ApiError::field("b", "is required"))?;
    let a = run_of(state, who, &set, &a_id).await?;
    let b = run_of(state, who, &set, &b_id).await?;
    for (name, run) in [("a", &a), ("b", &b)] {
        if run.status != EvalRunStatus::Succeeded {
            return Err(ApiError::because(
                crate::error::Reason::Conflict,
                format!(
                    "run {name} ({}) is {}; only SUCCEEDED runs compare",
                    run.id,
                    run.status.as_str()
                ),
            ));
        }
    }
    let mut cases = Vec::new();
    let (mut better, mut worse, mut same) = (0, 0, 0);
    let mut ids: Vec<&str> = a.results.iter().map(|r| r.case_id.as_str()).collect();
    for r in &b.results {
        if !ids.contains(&r.case_id.as_str()) {
            ids.push(&r.case_id);
        }
    }
    for id in ids {
        let ra = a.results.iter().find(|r| r.case_id == id);
        let rb = b.results.iter().find(|r| r.case_id == id);
        let score_a = ra.and_then(case_score);
        let score_b = rb.and_then(case_score);
        let change = match (score_a, score_b) {
            (Some(x), Some(y)) if y > x => {
                better += 1;
                "better"
            }
            (Some(x), Some(y)) if y < x => {
                worse += 1;
                "worse"
            }
            (Some(_), Some(_)) => {
                same += 1;
                "same"
            }
            _ => "not comparable",
        };
        cases.push(CaseComparison {
            case_id: id.to_owned(),
            question: rb.or(ra).map(|r| r.question.clone()).unwrap_or_default(),
            score_a,
            score_b,
            change: change.to_owned(),
            answer_a: ra.map(|r| r.answer.clone()),
            answer_b: rb.map(|r| r.answer.clone()),
        });
    }
    Ok(Json(RunComparison {
        a: EvalRunView::new(&a, false),
        b: EvalRunView::new(&b, false),
        cases,
        better,
        worse,
        same,
    }))
}
