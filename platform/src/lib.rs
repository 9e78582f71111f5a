//! The shared library of every AIgentable process: configuration, domain
//! model, tenant-scoped MongoDB repositories, auth and shared clients.

pub mod analytics;
pub mod api_keys;
pub mod auth;
pub mod backups;
pub mod bootstrap;
pub mod channels;
pub mod chunking;
pub mod config;
pub mod conversations;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod egress;
pub mod eval_import;
pub mod evals;
pub mod extract;
pub mod files;
pub mod group_commit;
pub mod handoff_brief;
pub mod ids;
pub mod kv;
pub mod live_cache;
pub mod live_config;
pub mod llm;
pub mod metrics_server;
pub mod model;
pub mod plan_caps;
pub mod plans;
pub mod rate_limits;
pub mod shutdown;
pub mod telemetry;
pub mod usage;

use std::sync::Arc;

pub use config::Config;
pub use db::Db;
pub use ipnet::IpNet;
pub use kv::Kv;

/// Connections and services shared by the handlers of one process.
#[derive(Clone, Debug)]
pub struct Platform {
    pub config: Arc<Config>,
    pub db: Db,
    pub kv: Kv,
    pub tokens: auth::TokenIssuer,
    pub secrets: crypto::SecretBox,
    /// Every password hash and check goes through this bound.
    pub passwords: auth::password::Hasher,
    /// The HTTP clients for every outbound call a tenant can steer.
    pub egress: egress::Egress,
    /// Tenants, agents, providers and indexes as replies read them, cached
    /// until a write announces a change.
    pub live: live_config::LiveConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach MongoDB: {0}")]
    Mongo(#[from] db::DbError),
    #[error("cannot reach Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("start-up failed: {0}")]
    Other(String),
}

impl Platform {
    /// Connects to MongoDB and Redis and checks both answer.
    pub async fn connect(config: Config) -> Result<Self, StartError> {
        let db = Db::connect(config.mongodb_uri.expose(), &config.mongodb_db).await?;
        db.ping().await?;
        let kv = Kv::connect(config.redis_url.expose(), &config.redis_namespace).await?;
        kv.ping().await?;
        let db = db.announcing_to(kv.clone());
        let live = live_config::LiveConfig::new(config.redis_url.expose(), &config.redis_namespace);
        let egress = egress::Egress::new(config.outbound).map_err(StartError::Other)?;
        Ok(Self {
            egress,
            tokens: auth::TokenIssuer::new(&config.jwt),
            secrets: crypto::SecretBox::new(config.data_encryption_key.expose()),
            passwords: auth::password::Hasher::new(
                config.password_hash_concurrency,
                config.password_hash_queue,
            ),
            config: Arc::new(config),
            db,
            kv,
            live,
        })
    }
}
