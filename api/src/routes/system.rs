//! `/api/v1/system/backups` (platform administrators): backups are jobs.

use bson::{Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use aigentable_jobs::Requester;
use aigentable_jobs::types::{RestoreBackup, RunBackup};
use aigentable_platform::ids::new_id;

use crate::accepted::AcceptedJob;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::{json_body_or_default, pagination, path_id};
use crate::guard::caller;
use crate::state::app;
use crate::views::Pagination;

const BACKUPS: &str = "backups";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    pub id: String,
    /// `QUEUED`, `RUNNING`, `COMPLETED` or `FAILED`.
    pub status: String,
    pub job_id: Option<String>,
    pub documents: Option<i64>,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<&Document> for BackupView {
    fn from(d: &Document) -> Self {
        let text = |k: &str| d.get_str(k).ok().map(str::to_owned);
        let int = |k: &str| {
            d.get_i64(k)
                .ok()
                .or_else(|| d.get_i32(k).ok().map(i64::from))
        };
        let date = |k: &str| d.get_datetime(k).ok().map(|t| t.to_chrono());
        Self {
            id: text("_id").unwrap_or_default(),
            status: text("status").unwrap_or_else(|| "QUEUED".to_owned()),
            job_id: text("jobId"),
            documents: int("documents"),
            size_bytes: int("sizeBytes"),
            error: text("error"),
            created_at: date("createdAt"),
            completed_at: date("completedAt"),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    pub backups: Vec<BackupView>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    pub backup: BackupView,
}

/// Backups, newest first (platform administrators).
#[endpoint(tags("system"), security(("bearerAuth" = [])), parameters(
    ("page" = Option<u64>, Query, description = "Page number, from 1"),
    ("limit" = Option<u64>, Query, description = "Items per page, 1 to 100 (default 10)"),
))]
pub async fn list_backups(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<BackupList>> {
    caller(depot)?;
    let page = pagination(req)?;
    let coll = app(depot).platform.db.unscoped::<Document>(BACKUPS);
    let total = coll
        .count_documents(doc! {})
        .await
        .map_err(ApiError::internal)?;
    let docs: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! { "createdAt": -1 })
        .skip(page.skip())
        .limit(i64::try_from(page.limit).unwrap_or(100))
        .await
        .map_err(ApiError::internal)?
        .try_collect()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(BackupList {
        backups: docs.iter().map(BackupView::from).collect(),
        pagination: Pagination::new(page, total),
    }))
}

/// Start a backup of all data (202 with the job id).
#[endpoint(tags("system"), security(("bearerAuth" = [])), status_codes(202, 401, 403))]
pub async fn create_backup(
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<BackupAccepted>> {
    let who = caller(depot)?;
    let state = app(depot);
    let backup_id = new_id();
    let now = bson::DateTime::now();
    let coll = state.platform.db.unscoped::<Document>(BACKUPS);
    coll.insert_one(doc! {
        "_id": &backup_id,
        "status": "QUEUED",
        "createdBy": who.user_id().as_str(),
        "createdAt": now,
        "updatedAt": now,
    })
    .await
    .map_err(ApiError::internal)?;
    // Under the administrator's tenant, so that GET /jobs/:id shows it.
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            RunBackup {
                backup_id: backup_id.clone(),
            },
        )
        .await?;
    coll.update_one(
        doc! { "_id": &backup_id },
        doc! { "$set": { "jobId": &job.id } },
    )
    .await
    .map_err(ApiError::internal)?;
    let stored = coll
        .find_one(doc! { "_id": &backup_id })
        .await
        .map_err(ApiError::internal)?
        .unwrap_or_default();
    tracing::info!(backup_id, job_id = %job.id, "backup requested");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(BackupAccepted {
        accepted: (&job).into(),
        backup: (&stored).into(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// Only count what the restore would replace, per collection.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreAccepted {
    #[serde(flatten)]
    pub accepted: AcceptedJob,
    pub backup_id: String,
    pub dry_run: bool,
}

/// Restore a completed backup (202 with the job). The job checks every
/// file against the backup's checksums, then replaces each collection's
/// documents with the backup's; `backups`, `jobs` and the `outbox` are left
/// alone. With `dryRun`, the job's result counts per collection the
/// documents in the backup and in the database, writing nothing. 404 for an
/// unknown backup, 409 for one that did not complete.
#[endpoint(tags("system"), security(("bearerAuth" = [])), request_body(content = RestoreRequest, description = "Optional"), status_codes(202, 400, 401, 403, 404, 409),
    parameters(("id" = String, Path, description = "Backup id")))]
pub async fn restore_backup(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<RestoreAccepted>> {
    let body: RestoreRequest = json_body_or_default(req).await?;
    let who = caller(depot)?;
    let backup_id = path_id(req, "backup")?;
    let state = app(depot);
    let backup = state
        .platform
        .db
        .unscoped::<Document>(BACKUPS)
        .find_one(doc! { "_id": &backup_id })
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound("backup"))?;
    let status = backup.get_str("status").unwrap_or("QUEUED");
    if status != "COMPLETED" {
        return Err(ApiError::because(
            Reason::InvalidTransition,
            format!("backup {backup_id} is {status}: only a completed backup can be restored"),
        ));
    }
    let job = state
        .jobs
        .enqueue(
            &who.tenant_id,
            Requester::User(who.user_id().clone()),
            RestoreBackup {
                backup_id: backup_id.clone(),
                dry_run: body.dry_run,
            },
        )
        .await?;
    tracing::warn!(backup_id, job_id = %job.id, dry_run = body.dry_run, "backup restore requested");
    res.status_code(StatusCode::ACCEPTED);
    Ok(Json(RestoreAccepted {
        accepted: (&job).into(),
        backup_id,
        dry_run: body.dry_run,
    }))
}

/// The platform administrators' routes.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("system/health").get(super::health::system_health))
        .push(Router::with_path("system/metrics").get(super::system_metrics::system_metrics))
        .push(
            Router::with_path("system/backups")
                .get(list_backups)
                .post(create_backup),
        )
        .push(Router::with_path("system/backups/{id}/restore").post(restore_backup))
}
