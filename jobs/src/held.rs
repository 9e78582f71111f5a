//! Work held while a tenant is suspended.
//!
//! A suspended tenant's webhooks are still acknowledged and stored, but its
//! bot stops answering: `process_inbound` and `generate_reply` finish
//! without doing anything and mark their record's result
//! `{"heldWhileSuspended": true}`. When the tenant is reactivated, those
//! records are queued again, in the order they arrived, and answered then.
//! The api releases them when a platform administrator reactivates the
//! tenant; the sweep releases any that a job marked held just after that.

use bson::doc;
use futures::TryStreamExt;
use serde_json::{Value, json};

use aigentable_platform::Db;
use aigentable_platform::db::DbError;
use aigentable_platform::domain::TenantStatus;
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::tenant::Tenants;

use crate::dispatch::push_record;
use crate::record::{self, JobRecord};
use crate::types::{GenerateReply, ProcessInbound};
use crate::{EnqueueError, Job, JobClient, JobStatus};

const HELD: &str = "result.heldWhileSuspended";

/// The result a handler returns when it holds its work.
pub fn held_result() -> Value {
    json!({ "heldWhileSuspended": true, "reason": "the workspace is suspended" })
}

/// Whether the tenant's bot must hold its work now.
pub async fn tenant_suspended(db: &Db, tenant: &TenantId) -> Result<bool, DbError> {
    Ok(Tenants(db)
        .get(tenant)
        .await?
        .is_some_and(|t| t.status == TenantStatus::Suspended))
}

fn held_filter() -> bson::Document {
    doc! {
        "type": { "$in": [ProcessInbound::NAME, GenerateReply::NAME] },
        "status": JobStatus::Succeeded.as_str(),
        HELD: true,
    }
}

/// Queues the tenant's held jobs again; returns how many.
pub async fn release(client: &JobClient, db: &Db, tenant: &TenantId) -> Result<u32, EnqueueError> {
    let jobs = db.scoped::<JobRecord>(tenant);
    let mut filter = held_filter();
    filter.insert("tenantId", tenant.as_str());
    let held: Vec<JobRecord> = db
        .unscoped::<JobRecord>(record::COLLECTION)
        .find(filter)
        .sort(doc! { "createdAt": 1, "_id": 1 })
        .await
        .map_err(DbError::from)?
        .try_collect()
        .await
        .map_err(DbError::from)?;
    let mut released = 0;
    for job in held {
        // Claimed one by one, so that two releases never queue a job twice.
        let claimed = jobs
            .update_one(
                doc! { "_id": &job.id, "status": JobStatus::Succeeded.as_str(), HELD: true },
                doc! {
                    "$set": {
                        "status": JobStatus::Queued.as_str(),
                        "attempts": 0,
                        "progress": 0,
                        "updatedAt": bson::DateTime::now(),
                    },
                    "$unset": { "result": "", "finishedAt": "", "startedAt": "", "lastError": "" },
                },
            )
            .await?;
        let Some(claimed) = claimed else {
            continue;
        };
        if let Err(e) = push_record(client, &claimed).await {
            // QUEUED in its record: the sweep's reconciler queues it once
            // Redis answers.
            tracing::warn!(job_id = %claimed.id, tenant_id = %tenant, error = %e, "held job released but not queued yet");
        }
        released += 1;
    }
    if released > 0 {
        tracing::info!(tenant_id = %tenant, released, "held inbound work released");
    }
    Ok(released)
}

/// Releases the held jobs of every tenant that is active again.
pub async fn release_reactivated(client: &JobClient, db: &Db) -> Result<u32, EnqueueError> {
    let tenants: Vec<String> = db
        .unscoped::<JobRecord>(record::COLLECTION)
        .distinct("tenantId", held_filter())
        .await
        .map_err(DbError::from)?
        .into_iter()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect();
    let mut released = 0;
    for tenant in tenants {
        let tenant = TenantId::from_trusted(tenant);
        if !tenant_suspended(db, &tenant).await? {
            released += release(client, db, &tenant).await?;
        }
    }
    Ok(released)
}
