//! A tenant's configuration as a reply reads it (the tenant, its agents,
//! the AI provider an agent answers with, the knowledge index), served
//! from an in-process cache: a customer message otherwise reads the same
//! four documents from MongoDB every time.
//!
//! Every write to those collections through the repositories announces the
//! tenant on a Redis pub/sub channel ([`announce_tenant`]; see
//! [`crate::db::TenantOwned::LIVE_CONFIG`] and
//! [`crate::model::tenant::Tenants`]), and each process drops that
//! tenant's entries: an agent switched off, a suspended tenant, a new
//! default provider take effect on every replica within a Redis round trip
//! of the write (a reply that starts in that moment sees the value before
//! it, as if it had started a moment earlier). The rules of what is served
//! when are [`crate::live_cache`]'s.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::OnceCell;

use crate::db::{Db, DbResult};
use crate::ids::TenantId;
use crate::kv::Kv;
use crate::live_cache::{self, LiveCache, Spec};
use crate::llm::index::KnowledgeIndex;
use crate::model::{Agent, AiProvider, Tenant};

/// How long an entry is served without an announcement.
const TTL: Duration = Duration::from_secs(30);
const CAPACITY: u64 = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Tenant(TenantId),
    Agent(TenantId, String),
    /// The provider an agent with this `aiProviderId` answers with.
    Provider(TenantId, Option<String>),
    Index(TenantId),
}

impl Key {
    fn tenant(&self) -> &TenantId {
        match self {
            Key::Tenant(t) | Key::Agent(t, _) | Key::Provider(t, _) | Key::Index(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Tenant(Option<Arc<Tenant>>),
    Agent(Option<Arc<Agent>>),
    Provider(Option<Arc<AiProvider>>),
    Index(Option<Arc<KnowledgeIndex>>),
}

/// Started on first use (a process that never reads configuration holds
/// no subscription); cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    redis_url: Arc<String>,
    namespace: Arc<String>,
    live: Arc<OnceCell<Option<LiveCache<Key, Value>>>>,
}

fn changes_channel(namespace: &str) -> String {
    format!("{namespace}:config-changes")
}

/// Tells every process that this tenant's configuration changed. Call it
/// after the write.
pub async fn announce_tenant(kv: &Kv, tenant: &TenantId) {
    live_cache::announce(kv, &changes_channel(kv.namespace()), &format!("t:{tenant}")).await;
}

/// Tells every process to start afresh (a database restore).
pub async fn announce_all_changed(kv: &Kv) {
    live_cache::announce(kv, &changes_channel(kv.namespace()), "all").await;
}

fn invalidate(cache: &Cache<Key, Value>, message: &str) -> bool {
    let Some(tenant) = message.strip_prefix("t:") else {
        return false;
    };
    let tenant = tenant.to_owned();
    cache
        .invalidate_entries_if(move |k, _| k.tenant().as_str() == tenant)
        .is_ok()
}

impl LiveConfig {
    pub fn new(redis_url: &str, namespace: &str) -> Self {
        Self {
            redis_url: Arc::new(redis_url.to_owned()),
            namespace: Arc::new(namespace.to_owned()),
            live: Arc::default(),
        }
    }

    /// The cache, or `None` when it cannot start (then every lookup reads
    /// the database).
    async fn live(&self) -> Option<&LiveCache<Key, Value>> {
        self.live
            .get_or_init(|| async {
                let spec = Spec {
                    what: "tenant configuration",
                    channel: changes_channel(&self.namespace),
                    ttl: TTL,
                    capacity: CAPACITY,
                    invalidate,
                };
                match LiveCache::start(&self.redis_url, spec).await {
                    Ok(live) => Some(live),
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration cache not started; replies read it from the database");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    async fn lookup<F>(&self, key: Key, load: F) -> DbResult<Value>
    where
        F: Future<Output = DbResult<Value>>,
    {
        match self.live().await {
            Some(live) => live.get_or_load(key, load).await,
            None => load.await,
        }
    }

    /// The tenant `id`, if it exists.
    pub async fn tenant(&self, db: &Db, id: &TenantId) -> DbResult<Option<Arc<Tenant>>> {
        let load = async {
            Ok(Value::Tenant(
                crate::model::tenant::Tenants(db)
                    .get(id)
                    .await?
                    .map(Arc::new),
            ))
        };
        match self.lookup(Key::Tenant(id.clone()), load).await? {
            Value::Tenant(t) => Ok(t),
            _ => Ok(None),
        }
    }

    /// This tenant's agent `id`, if it exists.
    pub async fn agent(
        &self,
        db: &Db,
        tenant: &TenantId,
        id: &str,
    ) -> DbResult<Option<Arc<Agent>>> {
        let load = async {
            Ok(Value::Agent(
                db.scoped::<Agent>(tenant)
                    .find_by_id(id)
                    .await?
                    .map(Arc::new),
            ))
        };
        match self
            .lookup(Key::Agent(tenant.clone(), id.to_owned()), load)
            .await?
        {
            Value::Agent(a) => Ok(a),
            _ => Ok(None),
        }
    }

    /// The provider an agent with `agent_provider` answers with (see
    /// [`crate::llm::resolve_provider`]).
    pub async fn provider(
        &self,
        db: &Db,
        tenant: &TenantId,
        agent_provider: Option<&str>,
    ) -> DbResult<Option<Arc<AiProvider>>> {
        let load = async {
            Ok(Value::Provider(
                crate::llm::resolve_provider(db, tenant, agent_provider)
                    .await?
                    .map(Arc::new),
            ))
        };
        let key = Key::Provider(tenant.clone(), agent_provider.map(str::to_owned));
        match self.lookup(key, load).await? {
            Value::Provider(p) => Ok(p),
            _ => Ok(None),
        }
    }

    /// The tenant's knowledge index record, if it has one.
    pub async fn index(&self, db: &Db, tenant: &TenantId) -> DbResult<Option<Arc<KnowledgeIndex>>> {
        let load = async {
            Ok(Value::Index(
                crate::llm::index::load(db, tenant).await?.map(Arc::new),
            ))
        };
        match self.lookup(Key::Index(tenant.clone()), load).await? {
            Value::Index(i) => Ok(i),
            _ => Ok(None),
        }
    }
}
