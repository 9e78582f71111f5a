//! `test_channel`: asks the provider what it can confirm: checks the token,
//! fills in the ids the form did not have, and claims the routing id the
//! provider confirmed the token owns. The verdict is stored on the channel
//! (`status`, `lastError`, `lastTestedAt`) and announced with
//! `channel-updated`.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::types::TestChannel;
use aigentable_platform::channels::client::ProviderError;
use aigentable_platform::channels::resolve::{ResolveError, resolve};
use aigentable_platform::channels::{routing_key, settings};
use aigentable_platform::db::DbError;
use aigentable_platform::model::{Channel, ChannelStatus};

use super::channel_check::{load, record};
use super::delivery::provider_client;
use crate::runner::{Handle, JobContext, JobError};

/// The test's verdict holds only for the token and account id it tested: a
/// `PUT` that changed either in the meantime wins (and a claim never lands
/// on a token the provider did not see).
fn tested_settings(channel: &Channel) -> bson::Document {
    let mut guard = doc! {};
    for name in settings::secret_names(channel.channel_type) {
        if let Some(sealed) = channel.secrets.get(name) {
            guard.insert(format!("secrets.{name}"), sealed.as_str());
        }
    }
    if let Some(field) = settings::routing_field(channel.channel_type) {
        let key = format!("config.{field}");
        match channel.config.get_str(field) {
            Ok(id) => guard.insert(key, id),
            Err(_) => guard.insert(key, doc! { "$exists": false }),
        };
    }
    guard
}

fn changed_meanwhile(channel: &Channel) -> Value {
    json!({ "channelId": channel.id, "status": channel.status.as_str(), "error": "the channel was changed while it was being tested; test it again" })
}

impl Handle for TestChannel {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let platform = &ctx.state.platform;
        let channel = load(&ctx, &self.channel_id).await?;
        let outcome = resolve(
            &provider_client(&ctx),
            &platform.config.channels,
            &platform.secrets,
            &channel,
        )
        .await;
        let message = match outcome {
            Ok(found) => {
                let mut extra = doc! {};
                let mut config = channel.config.clone();
                for (k, v) in found.learned {
                    extra.insert(format!("config.{k}"), v.clone());
                    config.insert(k, v);
                }
                if let Some(id) = &found.confirmed_id {
                    extra.insert("routingKey", routing_key(channel.channel_type, id));
                }
                let missing = settings::missing(channel.channel_type, &config, &channel.secrets);
                let status = if missing.is_empty() {
                    ChannelStatus::Active
                } else {
                    ChannelStatus::NeedsSetup
                };
                match record(&ctx, &channel, status, None, extra, tested_settings(&channel)).await {
                    Ok(Some(_)) => {
                        tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, channel_id = %channel.id, status = status.as_str(), "channel test passed");
                        return Ok(json!({
                            "channelId": channel.id,
                            "status": status.as_str(),
                            "accountConfirmed": found.confirmed_id.is_some() || settings::routing_field(channel.channel_type).is_none(),
                            "missing": missing.iter().map(|m| format!("config.{m}")).collect::<Vec<_>>(),
                            "provider": found.provider,
                        }));
                    }
                    Ok(None) => return Ok(changed_meanwhile(&channel)),
                    Err(DbError::Duplicate) => {
                        "this account (phone number, page or Instagram account) is already connected to another channel; disconnect it there first".to_owned()
                    }
                    Err(e) => return Err(JobError::transient(e)),
                }
            }
            Err(ResolveError::Missing(fields)) => {
                let status = ChannelStatus::NeedsSetup;
                let missing: Vec<String> = fields.iter().map(|f| format!("config.{f}")).collect();
                let said = format!(
                    "the provider cannot be asked yet: {} missing",
                    missing.join(", ")
                );
                return match record(&ctx, &channel, status, None, doc! {}, doc! {}).await {
                    Ok(_) => Ok(
                        json!({ "channelId": channel.id, "status": status.as_str(), "missing": missing, "error": said }),
                    ),
                    Err(e) => Err(JobError::transient(e)),
                };
            }
            Err(ResolveError::Provider(e @ ProviderError::Retryable { .. }))
                if ctx.attempt < TestChannel::MAX_ATTEMPTS =>
            {
                return Err(JobError::transient(e));
            }
            Err(e) => e.to_string(),
        };
        let guard = tested_settings(&channel);
        match record(
            &ctx,
            &channel,
            ChannelStatus::Error,
            Some(&message),
            doc! {},
            guard,
        )
        .await
        {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(changed_meanwhile(&channel)),
            Err(e) => return Err(JobError::transient(e)),
        }
        tracing::info!(tenant_id = %ctx.tenant_id, job_id = %ctx.job_id, channel_id = %channel.id, error = %message, "channel test failed");
        // The test itself ran: its verdict is the job's result.
        Ok(json!({ "channelId": channel.id, "status": "ERROR", "error": message }))
    }
}
