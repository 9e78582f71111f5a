//! `/api/v1/jobs`: the status of background work (202 answers carry a job id).

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::Value;

use aigentable_jobs::JobStatus;
use aigentable_jobs::dispatch::{push_record, retryable};
use aigentable_jobs::record::{self, JobRecord};

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult};
use crate::extract::{pagination, path_id, query_enum, query_string};
use crate::guard::{Caller, caller};
use crate::policy;
use crate::state::app;
use crate::views::Pagination;

/// A job as users see it; the payload is never shown (it may hold secrets).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED`, `DEAD` or `CANCELLED`.
    pub status: String,
    /// 0 to 100.
    pub progress: u8,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Why the last attempt failed, in plain words.
    pub last_error: Option<String>,
    #[salvo(schema(value_type = Option<Object>))]
    pub result: Option<Value>,
    /// User id, or `system`.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&JobRecord> for JobView {
    fn from(r: &JobRecord) -> Self {
        Self {
            id: r.id.clone(),
            job_type: r.job_type.clone(),
            queue: r.queue.clone(),
            status: r.status.as_str().to_owned(),
            progress: r.progress,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error: r.last_error.clone(),
            result: r.result.clone().map(bson::Bson::into_relaxed_extjson),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub pagination: Pagination,
}

/// A job is visible to whoever may call the route that created it
/// ([`policy::job_role`]: platform jobs such as backups to platform
/// administrators only); within that, admins see every job of the tenant
/// and other users the jobs they started. Cancel and retry see the same.
fn visibility(who: &Caller) -> Document {
    let mut filter = if who.is_admin() {
        doc! {}
    } else {
        doc! { "createdBy": who.user_id().as_str() }
    };
    if !who.is_super_admin() {
        filter.insert(
            "type",
            doc! { "$in": policy::visible_job_types(who.role()) },
        );
    }
    filter
}

async fn load(depot: &Depot, who: &Caller, id: &str) -> ApiResult<JobRecord> {
    let mut filter = visibility(who);
    filter.insert("_id", id);
    app(depot)
        .platform
        .db
        .scoped::<JobRecord>(&who.tenant_id)
        .find_one(filter)
        .await?
        .ok_or(ApiError::NotFound("job"))
}

const STATUSES: &str = "QUEUED, RUNNING, SUCCEEDED, FAILED, DEAD or CANCELLED";

/// List jobs, newest first.
#[endpoint(
    tags("jobs"),
    security(("bearerAuth" = [])),
    parameters(
        ("page" = Option<u64>, Query, description = "Page number, from 1"),
        ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
        ("type" = Option<String>, Query, description = "Job type, e.g. `ingest_document`"),
        ("status" = Option<String>, Query, description = "QUEUED, RUNNING, SUCCEEDED, FAILED, DEAD or CANCELLED"),
    )
)]
pub async fn list(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<JobList>> {
    let who = caller(depot)?;
    let page = pagination(req)?;
    let mut filter = visibility(who);
    if let Some(job_type) = query_string(req, "type", 64)? {
        filter.insert("type", job_type);
    }
    if let Some(status) = query_enum::<JobStatus>(req, "status", STATUSES)? {
        filter.insert("status", status.as_str());
    }
    let (jobs, total) = app(depot)
        .platform
        .db
        .scoped::<JobRecord>(&who.tenant_id)
        .find_page(filter, doc! { "createdAt": -1, "_id": -1 }, page)
        .await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// One job: poll it after a 202, or listen for `job-updated`.
#[endpoint(tags("jobs"), security(("bearerAuth" = [])), parameters(("id" = String, Path, description = "Job id")))]
pub async fn get(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<JobView>> {
    let who = caller(depot)?;
    let id = path_id(req, "job")?;
    Ok(Json((&load(depot, who, &id).await?).into()))
}

/// Cancel a queued or running job (409 once it has finished).
#[endpoint(tags("jobs"), security(("bearerAuth" = [])), status_codes(200, 404, 409), parameters(("id" = String, Path, description = "Job id")))]
pub async fn cancel(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<JobView>> {
    let who = caller(depot)?;
    let id = path_id(req, "job")?;
    let current = load(depot, who, &id).await?;
    let state = app(depot);
    match record::cancel(&state.platform.db, &who.tenant_id, &id).await? {
        Some(cancelled) => {
            tracing::info!(job_id = %id, tenant_id = %who.tenant_id, "job cancelled");
            Ok(Json((&cancelled).into()))
        }
        None => Err(ApiError::Conflict(format!(
            "the job is already {} and cannot be cancelled",
            current.status.as_str()
        ))),
    }
}

/// `202` of a retry: the accepted job, and the job as `GET /jobs/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobRetried {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    #[serde(flatten)]
    pub view: JobView,
}

/// Retry a failed or dead job from its stored payload (202; 409 otherwise).
#[endpoint(tags("jobs"), security(("bearerAuth" = [])), status_codes(202, 404, 409), parameters(("id" = String, Path, description = "Job id")))]
pub async fn retry(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<JobRetried>> {
    let who = caller(depot)?;
    let id = path_id(req, "job")?;
    let current = load(depot, who, &id).await?;
    if !retryable(current.status) {
        return Err(ApiError::Conflict(format!(
            "only FAILED or DEAD jobs can be retried; this one is {}",
            current.status.as_str()
        )));
    }
    if current.queue.parse::<aigentable_jobs::Queue>().is_err() {
        return Err(ApiError::Conflict(
            "this job's queue no longer exists".to_owned(),
        ));
    }
    let state = app(depot);
    let reset = record::reset_for_retry(&state.platform.db, &who.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::Conflict("the job changed meanwhile; reload it".to_owned()))?;
    if let Err(e) = push_record(&state.jobs, &reset).await {
        record::mark_failed(
            &state.platform.db,
            &who.tenant_id,
            &id,
            JobStatus::Failed,
            "the job queue was unavailable",
        )
        .await?;
        return Err(e.into());
    }
    tracing::info!(job_id = %id, tenant_id = %who.tenant_id, "job retried");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(JobRetried {
        accepted: (&reset).into(),
        view: (&reset).into(),
    }))
}

/// Every route of a job.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("jobs").get(list))
        .push(Router::with_path("jobs/{id}").get(get))
        .push(Router::with_path("jobs/{id}/cancel").post(cancel))
        .push(Router::with_path("jobs/{id}/retry").post(retry))
}
