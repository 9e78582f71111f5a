//! Where provider deliveries go: the channel a webhook names (by routing
//! key for Meta, by id for Telegram), served from an in-process cache so
//! that accepting a webhook reads no database.
//!
//! Every write that changes a channel announces it on a Redis pub/sub
//! channel ([`announce_change`], [`announce_all_changed`]); each process's
//! cache listens and drops what changed, so a rotated secret, a deactivated
//! or deleted channel takes effect on every replica within a round trip.
//! What the cache cannot know it does not serve:
//! - while the subscription is down (Redis unreachable, reconnecting) every
//!   lookup reads the database, and a new subscription starts from an empty
//!   cache (announcements may have been missed in between);
//! - a lookup that raced with an announcement is not cached (a generation
//!   count tells), so a value read before a change never outlives it;
//! - entries also expire after [`TTL`], a bound on staleness should a
//!   writer ever fail to announce.
//!
//! Unknown keys are cached too (as absent), so a flood of deliveries for
//! made-up accounts costs no database read either; [`CAPACITY`] bounds it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bson::doc;
use futures::{StreamExt, TryStreamExt};
use moka::sync::Cache;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::{Db, DbError};
use crate::kv::Kv;
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
#[derive(Clone)]
pub struct ChannelRoutes {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache<RouteKey, Entry>,
    /// Bumped by every invalidation: a lookup that saw it change while it
    /// read the database does not cache what it read.
    generation: AtomicU64,
    /// Whether announcements are being received right now.
    listening: AtomicBool,
    /// The listener, set once it is spawned (after `Inner` exists, so its
    /// weak reference upgrades); dropping the last clone stops it.
    task: OnceLock<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for ChannelRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRoutes")
            .field("entries", &self.inner.cache.entry_count())
            .field("listening", &self.inner.listening.load(Ordering::Relaxed))
            .finish()
    }
}

/// The pub/sub channel announcements travel on.
fn changes_channel(namespace: &str) -> String {
    format!("{namespace}:channel-changes")
}

/// Tells every process's cache that this channel changed (or is gone).
/// Call it after the write. A failed announcement is logged; the entry
/// then expires after [`TTL`].
pub async fn announce_change(kv: &Kv, channel_id: &str) {
    announce(kv, &format!("c:{channel_id}")).await;
}

/// Tells every process's cache to start afresh (a database restore).
pub async fn announce_all_changed(kv: &Kv) {
    announce(kv, "all").await;
}

async fn announce(kv: &Kv, message: &str) {
    let mut conn = kv.conn();
    let sent = redis::cmd("PUBLISH")
        .arg(changes_channel(kv.namespace()))
        .arg(message)
        .query_async::<u64>(&mut conn)
        .await;
    if let Err(e) = sent {
        tracing::warn!(change = %message, error = %e, "channel change not announced; caches drop it within their ttl");
    }
}

impl ChannelRoutes {
    /// Starts listening for announcements (waiting a couple of seconds at
    /// most for the subscription; until it holds, lookups read the
    /// database).
    pub async fn start(redis_url: &str, namespace: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let routes = Self {
            inner: Arc::new(Inner {
                cache: Cache::builder()
                    .max_capacity(CAPACITY)
                    .time_to_live(TTL)
                    .support_invalidation_closures()
                    .build(),
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                task: OnceLock::new(),
            }),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let weak = Arc::downgrade(&routes.inner);
        let task = tokio::spawn(listen(client, changes_channel(namespace), weak, ready_tx));
        let _ = routes.inner.task.set(task);
        if tokio::time::timeout(Duration::from_secs(2), ready_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                "channel change announcements not subscribed yet; webhooks read channels from the database"
            );
        }
        Ok(routes)
    }

    /// The channels with these routing keys (those that exist).
    pub async fn by_routing_keys(
        &self,
        db: &Db,
        keys: &[String],
    ) -> Result<Vec<Arc<Channel>>, DbError> {
        let listening = self.inner.listening.load(Ordering::Acquire);
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for key in keys {
            match listening
                .then(|| self.inner.cache.get(&RouteKey::Routing(key.clone())))
                .flatten()
            {
                Some(Some(channel)) => found.push(channel),
                Some(None) => {}
                None => missing.push(key.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        let loaded: Vec<Channel> = db
            .unscoped::<Channel>(COLLECTION)
            .find(doc! { "routingKey": { "$in": &missing } })
            .await?
            .try_collect()
            .await?;
        let loaded: Vec<Arc<Channel>> = loaded.into_iter().map(Arc::new).collect();
        if listening {
            for key in &missing {
                let entry = loaded
                    .iter()
                    .find(|c| c.routing_key.as_deref() == Some(key.as_str()))
                    .cloned();
                self.fill(RouteKey::Routing(key.clone()), entry, generation);
            }
        }
        found.extend(loaded);
        Ok(found)
    }

    /// The channel with this id, if it exists.
    pub async fn by_id(&self, db: &Db, id: &str) -> Result<Option<Arc<Channel>>, DbError> {
        let key = RouteKey::Id(id.to_owned());
        let listening = self.inner.listening.load(Ordering::Acquire);
        if listening && let Some(entry) = self.inner.cache.get(&key) {
            return Ok(entry);
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        let loaded = db
            .unscoped::<Channel>(COLLECTION)
            .find_one(doc! { "_id": id })
            .await?
            .map(Arc::new);
        if listening {
            self.fill(key, loaded.clone(), generation);
        }
        Ok(loaded)
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

    /// Caches what a lookup read, unless an invalidation came in since it
    /// started (what it read may predate that change).
    fn fill(&self, key: RouteKey, entry: Entry, generation: u64) {
        if self.inner.generation.load(Ordering::Acquire) == generation {
            self.inner.cache.insert(key, entry);
        }
    }
}

impl Inner {
    fn invalidate(&self, message: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Unknown keys go too: the change may have given one of them a
        // channel (a routing key confirmed, a channel created).
        let dropped = message.strip_prefix("c:").map(|id| {
            let id = id.to_owned();
            self.cache
                .invalidate_entries_if(move |_, v| v.as_ref().is_none_or(|c| c.id == id))
        });
        if !matches!(dropped, Some(Ok(_))) {
            self.cache.invalidate_all();
        }
    }

    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}

async fn listen(
    client: redis::Client,
    channel: String,
    routes: std::sync::Weak<Inner>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    let Some(inner) = routes.upgrade() else {
                        return;
                    };
                    // Announcements may have been missed while unsubscribed.
                    inner.reset();
                    inner.listening.store(true, Ordering::Release);
                    drop(inner);
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(inner) = routes.upgrade() else {
                            return;
                        };
                        let text: String = msg.get_payload().unwrap_or_default();
                        inner.invalidate(&text);
                    }
                    let Some(inner) = routes.upgrade() else {
                        return;
                    };
                    inner.listening.store(false, Ordering::Release);
                    inner.reset();
                    tracing::warn!("channel change subscription lost, reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "channel change subscription failed"),
            },
            Err(e) => tracing::warn!(error = %e, "channel change connection failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
