//! `test_channel` (one read-only provider call proving the credentials) and
//! `register_webhook` (Telegram `setWebhook` with our URL and secret token).
//! Both store what they learned on the channel: `status`, `lastError`,
//! `lastTestedAt`.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::types::{RegisterWebhook, TestChannel};
use aigentable_platform::channels::client::{ProviderError, Target};
use aigentable_platform::model::{Channel, ChannelStatus, ChannelType};

use super::delivery::provider_client;
use crate::runner::{Handle, JobContext, JobError};

fn status_str(s: ChannelStatus) -> &'static str {
    match s {
        ChannelStatus::Pending => "PENDING",
        ChannelStatus::Connected => "CONNECTED",
        ChannelStatus::Error => "ERROR",
    }
}

async fn load(ctx: &JobContext, id: &str) -> Result<Channel, JobError> {
    ctx.state
        .platform
        .db
        .scoped::<Channel>(&ctx.tenant_id)
        .find_by_id(id)
        .await
        .map_err(JobError::transient)?
        .ok_or_else(|| JobError::permanent("the channel no longer exists"))
}

/// Stores the outcome of a provider check on the channel.
async fn record(
    ctx: &JobContext,
    id: &str,
    status: ChannelStatus,
    error: Option<&str>,
    extra: bson::Document,
) -> Result<(), JobError> {
    let mut set = doc! {
        "status": status_str(status),
        "lastError": error.map_or(bson::Bson::Null, |e| bson::Bson::String(e.to_owned())),
        "lastTestedAt": bson::DateTime::now(),
        "updatedAt": bson::DateTime::now(),
    };
    set.extend(extra);
    ctx.state
        .platform
        .db
        .scoped::<Channel>(&ctx.tenant_id)
        .update_by_id(id, doc! { "$set": set })
        .await
        .map_err(JobError::transient)?;
    Ok(())
}

impl Handle for TestChannel {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let channel = load(&ctx, &self.channel_id).await?;
        if channel.channel_type == ChannelType::Website {
            record(&ctx, &channel.id, ChannelStatus::Connected, None, doc! {}).await?;
            return Ok(json!({ "channelId": channel.id, "status": "CONNECTED", "provider": null }));
        }
        let outcome =
            match Target::for_channel(&platform.config.channels, &platform.secrets, &channel) {
                Ok(target) => provider_client(&ctx).test(&target).await,
                Err(e) => Err(e),
            };
        match outcome {
            Ok(details) => {
                let mut extra = doc! {};
                if channel.channel_type == ChannelType::Telegram
                    && let Some(username) = details["username"].as_str()
                {
                    extra.insert("config.botUsername", username);
                }
                record(&ctx, &channel.id, ChannelStatus::Connected, None, extra).await?;
                tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, channel_id = %channel.id, "channel test passed");
                Ok(json!({ "channelId": channel.id, "status": "CONNECTED", "provider": details }))
            }
            Err(e @ ProviderError::Retryable { .. }) if ctx.attempt < TestChannel::MAX_ATTEMPTS => {
                Err(JobError::transient(e))
            }
            Err(e) => {
                let message = e.to_string();
                record(
                    &ctx,
                    &channel.id,
                    ChannelStatus::Error,
                    Some(&message),
                    doc! {},
                )
                .await?;
                tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, channel_id = %channel.id, error = %message, "channel test failed");
                // The test itself ran: its verdict is the job's result.
                Ok(json!({ "channelId": channel.id, "status": "ERROR", "error": message }))
            }
        }
    }
}

impl Handle for RegisterWebhook {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let channel = load(&ctx, &self.channel_id).await?;
        if channel.channel_type != ChannelType::Telegram || !channel.is_active {
            return Ok(
                json!({ "channelId": channel.id, "registered": false, "reason": "not an active Telegram channel" }),
            );
        }
        let secret = channel
            .webhook_secret
            .clone()
            .ok_or_else(|| JobError::permanent("the channel has no webhook secret"))?;
        let url = platform
            .config
            .channels
            .webhook_url(ChannelType::Telegram, &channel.id)
            .unwrap_or_default();
        let outcome =
            match Target::for_channel(&platform.config.channels, &platform.secrets, &channel) {
                Ok(target) => {
                    provider_client(&ctx)
                        .set_telegram_webhook(&target, &url, &secret)
                        .await
                }
                Err(e) => Err(e),
            };
        match outcome {
            Ok(()) => {
                record(&ctx, &channel.id, ChannelStatus::Connected, None, doc! {}).await?;
                tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, channel_id = %channel.id, "telegram webhook registered");
                Ok(json!({ "channelId": channel.id, "registered": true, "url": url }))
            }
            Err(e @ ProviderError::Retryable { .. })
                if ctx.attempt < RegisterWebhook::MAX_ATTEMPTS =>
            {
                Err(JobError::transient(e))
            }
            Err(e) => {
                let message = format!("could not register the webhook: {e}");
                record(
                    &ctx,
                    &channel.id,
                    ChannelStatus::Error,
                    Some(&message),
                    doc! {},
                )
                .await?;
                Err(JobError::Permanent(message))
            }
        }
    }
}
