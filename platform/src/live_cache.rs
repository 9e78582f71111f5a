//! An in-process cache of database reads that every process drops as soon
//! as a writer announces a change on a Redis pub/sub channel: the core of
//! the channel routes ([`crate::channels::routes`]) and of the tenant
//! configuration a reply reads ([`crate::live_config`]).
//!
//! What the cache cannot know it does not serve:
//! - while the subscription is down (Redis unreachable, reconnecting) every
//!   lookup reads the database, and a new subscription starts from an empty
//!   cache (announcements may have been missed in between);
//! - a lookup that raced with an announcement is not cached (a generation
//!   count tells), so a value read before a change never outlives it;
//! - entries also expire after their TTL, a bound on staleness should a
//!   writer ever fail to announce.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
pub use moka::sync::Cache;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::kv::Kv;

/// Drops what an announcement names; `false` when it could not tell what
/// that is, and everything is dropped instead.
pub type Invalidate<K, V> = fn(&Cache<K, V>, &str) -> bool;

/// What a [`LiveCache`] is: its announcements' channel, bounds, and how an
/// announcement is read.
pub struct Spec<K, V> {
    /// For logs: what is cached.
    pub what: &'static str,
    /// The pub/sub channel, namespaced.
    pub channel: String,
    pub ttl: Duration,
    pub capacity: u64,
    pub invalidate: Invalidate<K, V>,
}

/// Cheap to clone; the listener stops when the last clone is dropped.
pub struct LiveCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for LiveCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K, V> {
    cache: Cache<K, V>,
    what: &'static str,
    invalidate: Invalidate<K, V>,
    /// Bumped by every invalidation: a lookup that saw it change while it
    /// read the database does not cache what it read.
    generation: AtomicU64,
    /// Whether announcements are being received right now.
    listening: AtomicBool,
    /// The listener, set once it is spawned (after `Inner` exists, so its
    /// weak reference upgrades); dropping the last clone stops it.
    task: OnceLock<JoinHandle<()>>,
}

impl<K, V> Drop for Inner<K, V> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl<K, V> std::fmt::Debug for LiveCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCache")
            .field("what", &self.inner.what)
            .field("entries", &self.inner.cache.entry_count())
            .field("listening", &self.inner.listening.load(Ordering::Relaxed))
            .finish()
    }
}

/// A lookup's view of the cache when it started: whether what it reads
/// may be cached.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    listening: bool,
    generation: u64,
}

/// Tells every process's cache listening on `channel` that `message`
/// changed. Call it after the write. A failed announcement is logged; the
/// entries then expire after their TTL.
pub async fn announce(kv: &Kv, channel: &str, message: &str) {
    let mut conn = kv.conn();
    let sent = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async::<u64>(&mut conn)
        .await;
    if let Err(e) = sent {
        tracing::warn!(channel = %channel, change = %message, error = %e, "change not announced; caches drop it within their ttl");
    }
}

impl<K, V> LiveCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts listening for announcements (waiting a couple of seconds at
    /// most for the subscription; until it holds, lookups read the
    /// database).
    pub async fn start(redis_url: &str, spec: Spec<K, V>) -> redis::RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let live = Self {
            inner: Arc::new(Inner {
                cache: Cache::builder()
                    .max_capacity(spec.capacity)
                    .time_to_live(spec.ttl)
                    .support_invalidation_closures()
                    .build(),
                what: spec.what,
                invalidate: spec.invalidate,
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                task: OnceLock::new(),
            }),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let weak = Arc::downgrade(&live.inner);
        let task = tokio::spawn(listen(client, spec.channel, weak, ready_tx));
        let _ = live.inner.task.set(task);
        if tokio::time::timeout(Duration::from_secs(2), ready_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                what = spec.what,
                "change announcements not subscribed yet; lookups read the database"
            );
        }
        Ok(live)
    }

    /// Whether announcements are received now (otherwise nothing is served
    /// from memory).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// Taken before a lookup reads the database, given back to [`Self::fill`].
    pub fn ticket(&self) -> Ticket {
        Ticket {
            listening: self.inner.listening.load(Ordering::Acquire),
            generation: self.inner.generation.load(Ordering::Acquire),
        }
    }

    /// The cached value, if it may be served.
    pub fn get(&self, key: &K, ticket: Ticket) -> Option<V> {
        ticket
            .listening
            .then(|| self.inner.cache.get(key))
            .flatten()
    }

    /// Caches what a lookup read, unless an invalidation came in since it
    /// started (what it read may predate that change) or nothing is
    /// listening.
    pub fn fill(&self, key: K, value: V, ticket: Ticket) {
        if ticket.listening && self.inner.generation.load(Ordering::Acquire) == ticket.generation {
            self.inner.cache.insert(key, value);
        }
    }

    /// The cached value of `key`, else what `load` reads (cached).
    pub async fn get_or_load<E, F>(&self, key: K, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        let ticket = self.ticket();
        if let Some(value) = self.get(&key, ticket) {
            return Ok(value);
        }
        let value = load.await?;
        self.fill(key, value.clone(), ticket);
        Ok(value)
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn invalidate(&self, message: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !(self.invalidate)(&self.cache, message) {
            self.cache.invalidate_all();
        }
    }

    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}

async fn listen<K, V>(
    client: redis::Client,
    channel: String,
    live: Weak<Inner<K, V>>,
    ready: oneshot::Sender<()>,
) where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    let Some(inner) = live.upgrade() else {
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
                        let Some(inner) = live.upgrade() else {
                            return;
                        };
                        let text: String = msg.get_payload().unwrap_or_default();
                        inner.invalidate(&text);
                    }
                    let Some(inner) = live.upgrade() else {
                        return;
                    };
                    inner.listening.store(false, Ordering::Release);
                    inner.reset();
                    tracing::warn!(channel = %channel, "change subscription lost, reconnecting");
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "change subscription failed");
                }
            },
            Err(e) => tracing::warn!(channel = %channel, error = %e, "change connection failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
