//! `receive_inbound`: stores a verified delivery the api queued (its
//! items, raw payload and time) as a `WebhookEvent`, then processes it as
//! `process_inbound` does.
//!
//! Redis holds the delivery until the event is stored. A retry after a
//! crash finds it stored (same id) and goes on; processing is exactly once
//! per customer message all the same (see `process_inbound`). A suspended
//! tenant's event is stored and handed to a recorded `process_inbound` job,
//! which holds it until the tenant is reactivated.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::types::{ProcessInbound, ReceiveInbound};
use aigentable_platform::db::DbError;
use aigentable_platform::domain::TenantStatus;
use aigentable_platform::model::WebhookEvent;

use crate::handlers::process_inbound::process_event;
use crate::runner::{Handle, JobContext, JobError};

impl Handle for ReceiveInbound {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let db = &ctx.state.platform.db;
        let raw = match serde_json::from_str::<bson::Document>(self.raw.get()) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, error = %e, "raw webhook payload not storable, kept without it");
                doc! {}
            }
        };
        let event = WebhookEvent {
            id: self.event_id,
            tenant_id: ctx.tenant_id.clone(),
            channel_id: self.channel_id,
            channel_type: self.channel_type,
            items: self.items,
            raw,
            created_at: self.received_at,
        };
        // Stored now: no earlier run saw these items, and the queue script
        // let through only items no earlier delivery carried.
        let first_run = match db
            .scoped::<WebhookEvent>(&ctx.tenant_id)
            .insert(&event)
            .await
        {
            Ok(()) => true,
            // Stored by an earlier run of this job.
            Err(DbError::Duplicate) => false,
            Err(e) => return Err(JobError::transient(e)),
        };
        let platform = &ctx.state.platform;
        let suspended = platform
            .live
            .tenant(db, &ctx.tenant_id)
            .await
            .map_err(JobError::transient)?
            .is_some_and(|t| t.status == TenantStatus::Suspended);
        if suspended {
            let held = ctx
                .enqueue_follow_up(ProcessInbound {
                    channel_id: event.channel_id.clone(),
                    event_id: event.id.clone(),
                })
                .await?;
            tracing::info!(job_id = %ctx.job_id, tenant_id = %ctx.tenant_id, event_id = %event.id, held_by = %held.id, "inbound event stored for later: the tenant is suspended");
            return Ok(json!({ "eventId": event.id, "heldBy": held.id }));
        }
        process_event(&ctx, &event, first_run).await
    }
}
