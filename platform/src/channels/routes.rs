//! Where provider deliveries go: the channel a webhook names (by routing
//! key for Meta, by id for Telegram), served from an in-process cache so
//! that accepting a webhook reads no database.
//!
//! Every write that changes a channel announces it on a Redis pub/sub
//! channel ([`announce_change`], [`announce_all_changed`]); each process's
//! cache listens and drops what changed, so a rotated secret, a deactivated
//! or deleted channel takes effect on every replica within a round trip.
//! What the cache serves and when is [`crate::live_cache`]'s; entries
//! expire after [`TTL`] should a writer ever fail to announce.
//!
//! Unknown keys are cached too (as absent), so a flood of deliveries for
//! made-up accounts costs no database read either; [`CAPACITY`] bounds it.

use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use futures::TryStreamExt;
use moka::sync::Cache;

use crate::db::{Db, DbError};
use crate::kv::Kv;
use crate::live_cache::{self, LiveCache, Spec};
use crate::model::Channel;
use crate::model::channel::COLLECTION;

/// How long an entry is served without an announcement.
const TTL: Duration = Duration::from_secs(30);
/// Entries held, known and unknown keys together.
const CAPACITY: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RouteKey {
    Routing(String),
    Id(String),
}

type Entry = Option<Arc<Channel>>;

/// Cheap to clone; the listener stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct ChannelRoutes {
    live: LiveCache<RouteKey, Entry>,
}

/// The pub/sub channel announcements travel on.
fn changes_channel(namespace: &str) -> String {
    format!("{namespace}:channel-changes")
}

/// Tells every process's cache that this channel changed (or is gone).
/// Call it after the write. A failed announcement is logged; the entry
/// then expires after [`TTL`].
pub async fn announce_change(kv: &Kv, channel_id: &str) {
    live_cache::announce(
        kv,
        &changes_channel(kv.namespace()),
        &format!("c:{channel_id}"),
    )
    .await;
}

/// Tells every process's cache to start afresh (a database restore).
pub async fn announce_all_changed(kv: &Kv) {
    live_cache::announce(kv, &changes_channel(kv.namespace()), "all").await;
}

/// Drops the channel an announcement names, and every unknown key: the
/// change may have given one of them a channel (a routing key confirmed,
/// a channel created).
fn invalidate(cache: &Cache<RouteKey, Entry>, message: &str) -> bool {
    let Some(id) = message.strip_prefix("c:") else {
        return false;
    };
    let id = id.to_owned();
    cache
        .invalidate_entries_if(move |_, v| v.as_ref().is_none_or(|c| c.id == id))
        .is_ok()
}

impl ChannelRoutes {
    /// Starts listening for announcements (waiting a couple of seconds at
    /// most for the subscription; until it holds, lookups read the
    /// database).
    pub async fn start(redis_url: &str, namespace: &str) -> redis::RedisResult<Self> {
        let live = LiveCache::start(
            redis_url,
            Spec {
                what: "channel routes",
                channel: changes_channel(namespace),
                ttl: TTL,
                capacity: CAPACITY,
                invalidate,
            },
        )
        .await?;
        Ok(Self { live })
    }

    /// The channels with these routing keys (those that exist).
    pub async fn by_routing_keys(
        &self,
        db: &Db,
        keys: &[String],
    ) -> Result<Vec<Arc<Channel>>, DbError> {
        let ticket = self.live.ticket();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for key in keys {
            match self.live.get(&RouteKey::Routing(key.clone()), ticket) {
                Some(Some(channel)) => found.push(channel),
                Some(None) => {}
                None => missing.push(key.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded: Vec<Channel> = db
            .unscoped::<Channel>(COLLECTION)
            .find(doc! { "routingKey": { "$in": &missing } })
            .await?
            .try_collect()
            .await?;
        let loaded: Vec<Arc<Channel>> = loaded.into_iter().map(Arc::new).collect();
        for key in &missing {
            let entry = loaded
                .iter()
                .find(|c| c.routing_key.as_deref() == Some(key.as_str()))
                .cloned();
            self.live
                .fill(RouteKey::Routing(key.clone()), entry, ticket);
        }
        found.extend(loaded);
        Ok(found)
    }

    /// The channel with this id, if it exists.
    pub async fn by_id(&self, db: &Db, id: &str) -> Result<Option<Arc<Channel>>, DbError> {
        self.live
            .get_or_load(RouteKey::Id(id.to_owned()), async {
                Ok(db
                    .unscoped::<Channel>(COLLECTION)
                    .find_one(doc! { "_id": id })
                    .await?
                    .map(Arc::new))
            })
            .await
    }

    /// This tenant's channel with this id, if it exists (a tenant-scoped
    /// read, as `db.scoped::<Channel>(tenant).find_by_id(id)` would).
    pub async fn of_tenant(
        &self,
        db: &Db,
        tenant: &crate::ids::TenantId,
        id: &str,
    ) -> Result<Option<Arc<Channel>>, DbError> {
        Ok(self.by_id(db, id).await?.filter(|c| &c.tenant_id == tenant))
    }
}
