//! `register_webhook`: Telegram `setWebhook` with our URL and secret token;
//! the outcome is stored on the channel and announced like a test's.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::types::RegisterWebhook;
use aigentable_platform::channels::client::{ProviderError, Target};
use aigentable_platform::model::{ChannelStatus, ChannelType};

use super::channel_check::{load, record};
use super::delivery::provider_client;
use crate::runner::{Handle, JobContext, JobError};

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
                record(
                    &ctx,
                    &channel,
                    ChannelStatus::Active,
                    None,
                    doc! {},
                    doc! {},
                )
                .await
                .map_err(JobError::transient)?;
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
                    &channel,
                    ChannelStatus::Error,
                    Some(&message),
                    doc! {},
                    doc! {},
                )
                .await
                .map_err(JobError::transient)?;
                Err(JobError::Permanent(message))
            }
        }
    }
}
