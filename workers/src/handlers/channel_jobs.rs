//! `test_channel` (asks the provider what it can confirm: checks the token,
//! fills in the ids the form did not have, and claims the routing id the
//! provider confirmed the token owns) and `register_webhook` (Telegram
//! `setWebhook` with our URL and secret token). Both store what they
//! learned on the channel (`status`, `lastError`, `lastTestedAt`) and
//! announce it with `channel-updated`.

use bson::doc;
use serde_json::{Value, json};

use aigentable_jobs::Job;
use aigentable_jobs::events;
use aigentable_jobs::types::{RegisterWebhook, TestChannel};
use aigentable_platform::channels::client::{ProviderError, Target};
use aigentable_platform::channels::resolve::{ResolveError, resolve};
use aigentable_platform::channels::{routing_key, settings, setup};
use aigentable_platform::db::DbError;
use aigentable_platform::model::{Channel, ChannelStatus, ChannelType};

use super::delivery::provider_client;
use crate::runner::{Handle, JobContext, JobError};

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

/// Stores the outcome of a provider check on the channel and announces it.
/// `extra` may set `routingKey`: a duplicate means another channel already
/// holds that account. `guard` narrows the update to the settings that were
/// checked. Answers the channel as stored, or `None` when it changed (or
/// vanished) since it was read.
async fn record(
    ctx: &JobContext,
    channel: &Channel,
    status: ChannelStatus,
    error: Option<&str>,
    extra: bson::Document,
    guard: bson::Document,
) -> Result<Option<Channel>, DbError> {
    let mut set = doc! {
        "status": status.as_str(),
        "lastError": error.map_or(bson::Bson::Null, |e| bson::Bson::String(e.to_owned())),
        "lastTestedAt": bson::DateTime::now(),
        "updatedAt": bson::DateTime::now(),
    };
    set.extend(extra);
    let mut filter = doc! { "_id": &channel.id };
    filter.extend(guard);
    let stored = ctx
        .state
        .platform
        .db
        .scoped::<Channel>(&ctx.tenant_id)
        .update_one(filter, doc! { "$set": set })
        .await?;
    if let Some(c) = &stored {
        announce(ctx, c).await;
    }
    Ok(stored)
}

async fn announce(ctx: &JobContext, channel: &Channel) {
    let platform = &ctx.state.platform;
    events::channel_updated(
        &platform.kv,
        channel.tenant_id.as_str(),
        &channel.id,
        setup::event_payload(channel, &platform.config.channels),
    )
    .await;
}

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
