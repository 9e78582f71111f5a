//! What the channel jobs (`test_channel`, `register_webhook`) share: load
//! the channel, store a provider check's outcome on it, and announce it with
//! `channel-updated`.

use bson::doc;

use aigentable_jobs::events;
use aigentable_platform::channels::routes;
use aigentable_platform::channels::setup;
use aigentable_platform::db::DbError;
use aigentable_platform::model::{Channel, ChannelStatus};

use crate::runner::{JobContext, JobError};

pub(crate) async fn load(ctx: &JobContext, id: &str) -> Result<Channel, JobError> {
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
pub(crate) async fn record(
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
        routes::announce_change(&ctx.state.platform.kv, &c.id).await;
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
