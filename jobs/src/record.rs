//! Job status records in MongoDB: what `GET /api/v1/jobs/:id` shows.

use bson::{Bson, Document, doc};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use aigentable_platform::db::{Db, DbResult, TenantOwned};
use aigentable_platform::ids::TenantId;

pub const COLLECTION: &str = "jobs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Dead => "DEAD",
            JobStatus::Cancelled => "CANCELLED",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub status: JobStatus,
    pub progress: u8,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub result: Option<Bson>,
    /// The payload, kept so that a failed job can be retried from its record.
    pub payload: Bson,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// User id, or `system` for scheduled and internal work.
    pub created_by: String,
    #[serde(with = "aigentable_platform::model::bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "aigentable_platform::model::bson_datetime")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "aigentable_platform::model::bson_datetime_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, with = "aigentable_platform::model::bson_datetime_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl TenantOwned for JobRecord {
    const COLLECTION: &'static str = COLLECTION;
    fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
}

fn now() -> bson::DateTime {
    bson::DateTime::now()
}

/// Marks a job running under `claim` (the queue's claim token of this run)
/// unless it was cancelled or finished meanwhile; returns the record as
/// stored, or `None` when it must not run.
///
/// A record already RUNNING is taken over only by a later attempt: the queue
/// counts an attempt at every claim, so a run whose lease expired (its
/// worker died or stalled) is superseded by the next claim, but a second
/// claim of the same attempt cannot start the job again.
pub async fn mark_running(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    attempt: u32,
    claim: &str,
) -> DbResult<Option<JobRecord>> {
    let records = db.scoped::<JobRecord>(tenant);
    let set = doc! { "$set": {
        "status": "RUNNING",
        "attempts": i64::from(attempt),
        "claim": claim,
        "startedAt": now(),
        "updatedAt": now(),
    } };
    // Two filters tried in turn rather than one with `$or`: secantusd-rs
    // runs a filter holding `$or` by reading the whole collection, whatever
    // its explain says, so every start cost a scan of all job records. The
    // first one is the only round trip of a normal start.
    if let Some(record) = records
        .update_one(doc! { "_id": id, "status": "QUEUED" }, set.clone())
        .await?
    {
        return Ok(Some(record));
    }
    records
        .update_one(
            doc! { "_id": id, "status": "RUNNING", "attempts": { "$lt": i64::from(attempt) } },
            set,
        )
        .await
}

/// Records success of the run that holds `claim`. `None` when the job was
/// cancelled meanwhile or another claim took it over: a cancelled job never
/// ends SUCCEEDED.
pub async fn mark_succeeded(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    claim: &str,
    result: Bson,
) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": "RUNNING", "claim": claim },
            doc! { "$set": {
                "status": "SUCCEEDED",
                "progress": 100,
                "result": result,
                "lastError": Bson::Null,
                "finishedAt": now(),
                "updatedAt": now(),
            } },
        )
        .await
}

/// [`mark_failed`] for the run that holds `claim`: a run superseded by
/// another claim (or a cancelled job) leaves the record alone.
pub async fn mark_attempt_failed(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    claim: &str,
    status: JobStatus,
    error: &str,
) -> DbResult<Option<JobRecord>> {
    let mut set = doc! {
        "status": status.as_str(),
        "lastError": error,
        "updatedAt": now(),
    };
    if status.is_terminal() {
        set.insert("finishedAt", now());
    }
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": "RUNNING", "claim": claim },
            doc! { "$set": set },
        )
        .await
}

/// Records an attempt's failure. `status` is `QUEUED` when it will be
/// retried, `FAILED` when retrying cannot help, `DEAD` after the last attempt.
pub async fn mark_failed(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    status: JobStatus,
    error: &str,
) -> DbResult<Option<JobRecord>> {
    let mut set = doc! {
        "status": status.as_str(),
        "lastError": error,
        "updatedAt": now(),
    };
    if status.is_terminal() {
        set.insert("finishedAt", now());
    }
    // A cancelled job stays cancelled whatever its last attempt did.
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": { "$in": ["QUEUED", "RUNNING"] } },
            doc! { "$set": set },
        )
        .await
}

/// Marks SUCCEEDED a RUNNING job that the queue saw finish but whose record
/// update failed (the sweep finds it): the result itself is lost.
pub async fn mark_finished_unrecorded(
    db: &Db,
    tenant: &TenantId,
    id: &str,
) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": "RUNNING" },
            doc! { "$set": {
                "status": "SUCCEEDED",
                "progress": 100,
                "result": { "resultUnrecorded": true },
                "finishedAt": now(),
                "updatedAt": now(),
            } },
        )
        .await
}

/// Puts the record of a run given back by a draining worker (see
/// [`crate::queue::Drain`]) back to QUEUED, if that run's claim still holds
/// it: the job runs again without an attempt spent.
pub async fn mark_released(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    claim: &str,
    why: &str,
) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": "RUNNING", "claim": claim },
            doc! { "$set": {
                "status": "QUEUED",
                "claim": Bson::Null,
                "lastError": why,
                "updatedAt": now(),
            } },
        )
        .await
}

/// [`mark_released`] for every run a draining worker gives back, in one
/// round trip: a drain that ends with dozens of runs must not spend its
/// stop budget on one update each. Returns how many records went back.
pub async fn mark_all_released(db: &Db, runs: &[(&str, &str, &str)], why: &str) -> DbResult<u64> {
    if runs.is_empty() {
        return Ok(0);
    }
    // `_id`, tenant and claim each as one `$in` rather than an `$or` of
    // triples (which secantusd-rs runs as a scan of every job record): the
    // same records, since a claim token names one fetch of this worker, so
    // a record holding any of these tokens is one of this worker's runs.
    let ids: Vec<&str> = runs.iter().map(|(_, id, _)| *id).collect();
    let tenants: Vec<&str> = runs.iter().map(|(tenant, _, _)| *tenant).collect();
    let claims: Vec<&str> = runs.iter().map(|(_, _, claim)| *claim).collect();
    let result = db
        .unscoped::<Document>(COLLECTION)
        .update_many(
            doc! {
                "_id": { "$in": ids },
                "tenantId": { "$in": tenants },
                "status": "RUNNING",
                "claim": { "$in": claims },
            },
            doc! { "$set": {
                "status": "QUEUED",
                "claim": Bson::Null,
                "lastError": why,
                "updatedAt": now(),
            } },
        )
        .await?;
    Ok(result.modified_count)
}

/// Cancels a queued or running job: a queued one never starts; a running
/// handler is not interrupted (it may check [`is_cancelled`]), but its
/// outcome is no longer recorded (it never ends SUCCEEDED) and it is not
/// retried.
pub async fn cancel(db: &Db, tenant: &TenantId, id: &str) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": { "$in": ["QUEUED", "RUNNING"] } },
            doc! { "$set": { "status": "CANCELLED", "finishedAt": now(), "updatedAt": now() } },
        )
        .await
}

/// Whether the job was cancelled (for a running handler that checks).
pub async fn is_cancelled(db: &Db, tenant: &TenantId, id: &str) -> DbResult<bool> {
    Ok(db
        .scoped::<JobRecord>(tenant)
        .find_by_id(id)
        .await?
        .is_some_and(|r| r.status == JobStatus::Cancelled))
}

/// Puts a failed or dead job back to `QUEUED` with fresh attempts.
pub async fn reset_for_retry(db: &Db, tenant: &TenantId, id: &str) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_one(
            doc! { "_id": id, "status": { "$in": ["FAILED", "DEAD"] } },
            doc! { "$set": {
                "status": "QUEUED",
                "attempts": 0,
                "progress": 0,
                "lastError": Bson::Null,
                "result": Bson::Null,
                "startedAt": Bson::Null,
                "finishedAt": Bson::Null,
                "updatedAt": now(),
            } },
        )
        .await
}

pub async fn set_progress(
    db: &Db,
    tenant: &TenantId,
    id: &str,
    progress: u8,
) -> DbResult<Option<JobRecord>> {
    db.scoped::<JobRecord>(tenant)
        .update_by_id(
            id,
            doc! { "$set": { "progress": i32::from(progress.min(100)), "updatedAt": now() } },
        )
        .await
}

/// Tenant of platform-wide jobs (sweeps, rollups, platform backups).
pub const SYSTEM_TENANT: &str = "system";

pub fn system_tenant() -> TenantId {
    TenantId::from_trusted(SYSTEM_TENANT)
}
