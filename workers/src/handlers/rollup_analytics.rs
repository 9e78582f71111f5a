//! Hourly analytics rollup: the analytics facts of the hour (and of hours
//! missed or made dirty by late facts) into hourly buckets per tenant ×
//! agent × channel and daily buckets in each tenant's timezone (see
//! `platform::analytics::rollup`); plus the raw per-tenant counts of stored
//! conversations and messages in `analytics_hourly` (re-running an hour
//! replaces them).

use bson::{Document, doc};
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use serde_json::{Value, json};

use aigentable_jobs::types::RollupAnalytics;
use aigentable_platform::Db;
use aigentable_platform::usage::collections::{CONVERSATIONS, MESSAGES};

use crate::runner::{Handle, JobContext, JobError};

pub const ANALYTICS_HOURLY: &str = "analytics_hourly";

async fn per_tenant(
    db: &Db,
    coll: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, JobError> {
    let pipeline = vec![
        doc! { "$match": { "createdAt": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) } } },
        doc! { "$group": { "_id": "$tenantId", "count": { "$sum": 1 } } },
    ];
    let rows: Vec<Document> = db
        .unscoped::<Document>(coll)
        .aggregate(pipeline)
        .await
        .map_err(JobError::transient)?
        .try_collect()
        .await
        .map_err(JobError::transient)?;
    Ok(rows
        .into_iter()
        .filter_map(|d| {
            let tenant = d.get_str("_id").ok()?.to_owned();
            let count = d
                .get_i64("count")
                .ok()
                .or_else(|| d.get_i32("count").ok().map(i64::from))?;
            Some((tenant, count))
        })
        .collect())
}

impl Handle for RollupAnalytics {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let start = DateTime::parse_from_rfc3339(&self.hour)
            .map_err(|e| {
                JobError::permanent(format!("hour '{}' is not an ISO-8601 time: {e}", self.hour))
            })?
            .with_timezone(&Utc);
        let end = start + Duration::hours(1);
        let db = &ctx.state.platform.db;
        let conversations = per_tenant(db, CONVERSATIONS, start, end).await?;
        let messages = per_tenant(db, MESSAGES, start, end).await?;
        let mut tenants: Vec<&String> = conversations
            .iter()
            .chain(messages.iter())
            .map(|(t, _)| t)
            .collect();
        tenants.sort();
        tenants.dedup();
        let find = |rows: &[(String, i64)], t: &str| {
            rows.iter().find(|(id, _)| id == t).map_or(0, |(_, c)| *c)
        };
        let out = db.unscoped::<Document>(ANALYTICS_HOURLY);
        for tenant in &tenants {
            out.update_one(
                doc! { "_id": format!("{tenant}:{}", start.to_rfc3339()) },
                doc! { "$set": {
                    "tenantId": tenant.as_str(),
                    "hour": bson::DateTime::from_chrono(start),
                    "conversations": find(&conversations, tenant),
                    "messages": find(&messages, tenant),
                    "updatedAt": bson::DateTime::now(),
                } },
            )
            .upsert(true)
            .await
            .map_err(JobError::transient)?;
        }
        let rolled = aigentable_platform::analytics::rollup::run(db, start)
            .await
            .map_err(JobError::transient)?;
        tracing::info!(job_id = %ctx.job_id, hour = %start.to_rfc3339(), hours = rolled.hours, dirty_hours = rolled.dirty_hours, days = rolled.days, "analytics rolled up");
        Ok(json!({ "hour": start.to_rfc3339(), "tenants": tenants.len(), "analytics": rolled }))
    }
}
