//! Transactional email. Every email is recorded in the `outbox` collection;
//! with `SMTP_URL` it is also sent, once, even when the job is retried.
//!
//! One-time tokens (reset and verification links) travel sealed in the job
//! and are put into the email only here, at send time. With SMTP the outbox
//! keeps the email as written, with the `{{token}}` placeholder, so no
//! stored record holds a usable link. Without SMTP (development) the outbox
//! is the developer's mailbox and keeps the rendered email: it is then a
//! dev-only mailbox, and backups never include the outbox.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::types::SendEmail;
use aigentable_platform::crypto::sha256_hex;

use crate::runner::{Handle, JobContext, JobError};

pub const OUTBOX: &str = "outbox";

impl Handle for SendEmail {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let outbox = platform.db.unscoped::<bson::Document>(OUTBOX);
        let id = sha256_hex(&self.dedupe_key);
        let smtp = ctx.state.mailer.is_some();
        let existing = outbox
            .find_one(doc! { "_id": &id, "tenantId": ctx.tenant_id.as_str() })
            .await
            .map_err(JobError::transient)?;
        if existing
            .as_ref()
            .and_then(|d| d.get_str("status").ok())
            .is_some_and(|s| s == "SENT" || s == "LOGGED")
        {
            return Ok(json!({ "outboxId": id, "duplicate": true }));
        }
        let secret = match &self.sealed_token {
            Some(sealed) => Some(platform.secrets.open(sealed).map_err(|e| {
                JobError::permanent(format!("the email's token cannot be opened: {e}"))
            })?),
            None => None,
        };
        let render = |template: &str| match &secret {
            Some(token) => template.replace(SendEmail::TOKEN_PLACEHOLDER, token),
            None => template.to_owned(),
        };
        let (subject, text) = (render(&self.subject), render(&self.text));
        // The outbox keeps secrets only when it is the developer's mailbox.
        let (stored_subject, stored_text) = if smtp {
            (self.subject.as_str(), self.text.as_str())
        } else {
            (subject.as_str(), text.as_str())
        };
        let now = bson::DateTime::now();
        outbox
            .update_one(
                doc! { "_id": &id },
                doc! {
                    "$set": { "status": "PENDING", "updatedAt": now },
                    "$setOnInsert": {
                        "tenantId": ctx.tenant_id.as_str(),
                        "to": &self.to,
                        "subject": stored_subject,
                        "text": stored_text,
                        "purpose": &self.purpose,
                        "jobId": &ctx.job_id,
                        "createdAt": now,
                    },
                },
            )
            .upsert(true)
            .await
            .map_err(JobError::transient)?;

        let status = if let Some(mailer) = &ctx.state.mailer {
            mailer.send(&self.to, &subject, &text, &id).await?;
            tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, outbox_id = %id, purpose = %self.purpose, "email sent");
            "SENT"
        } else {
            // No mail server in development: the outbox is the mailbox.
            tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, outbox_id = %id, purpose = %self.purpose, "email written to the outbox (no SMTP_URL configured)");
            "LOGGED"
        };
        outbox
            .update_one(
                doc! { "_id": &id },
                doc! { "$set": { "status": status, "updatedAt": bson::DateTime::now() } },
            )
            .await
            .map_err(JobError::transient)?;
        Ok(json!({ "outboxId": id, "transport": if smtp { "smtp" } else { "outbox" } }))
    }
}
