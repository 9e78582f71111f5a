//! Worker processes: run jobs from the Redis queues against MongoDB and the
//! outside world, keeping each job's record and realtime events truthful.

pub mod cli;
pub mod handlers;
pub mod mailer;
pub mod metrics;
pub mod registry;
pub mod runner;

use std::sync::Arc;

use aigentable_jobs::{EnqueueError, JobClient};
use aigentable_platform::Platform;
use aigentable_platform::channels::routes::ChannelRoutes;
use aigentable_platform::ids::TenantId;
use aigentable_platform::model::Channel;
use aigentable_vectors::VectorStore;

/// A channel could not be read (retry later).
#[derive(Debug, thiserror::Error)]
pub enum ChannelLookupError {
    #[error("channel cache not started: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Db(#[from] aigentable_platform::db::DbError),
}

/// State injected into every job handler.
#[derive(Clone)]
pub struct WorkerState {
    pub platform: Platform,
    /// `None` without `SMTP_URL`: emails then stay in the outbox.
    pub mailer: Option<mailer::Mailer>,
    /// The knowledge base's vectors: the Qdrant server at `QDRANT_URL`, or
    /// the embedded store this process owns. `None` only in processes that
    /// run no knowledge jobs (tests of other queues, the benchmark).
    pub vectors: Option<Arc<dyn VectorStore>>,
    /// Follow-up jobs (replies, deliveries, requeues) share one client per
    /// worker state, connected on first use.
    jobs: Arc<tokio::sync::OnceCell<JobClient>>,
    /// Channels by id, cached until a change is announced (see
    /// `platform::channels::routes`); started on first use.
    channels: Arc<tokio::sync::OnceCell<ChannelRoutes>>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerState")
            .field("platform", &self.platform)
            .field("mailer", &self.mailer)
            .field("vectors", &self.vectors.is_some())
            .finish()
    }
}

impl WorkerState {
    pub fn new(platform: Platform) -> anyhow::Result<Self> {
        let mailer = match &platform.config.smtp_url {
            Some(url) => Some(mailer::Mailer::new(
                url.expose(),
                &platform.config.email_from,
            )?),
            None => None,
        };
        Ok(Self {
            platform,
            mailer,
            vectors: None,
            jobs: Arc::default(),
            channels: Arc::default(),
        })
    }

    /// The job client follow-up jobs are enqueued with.
    pub async fn jobs(&self) -> Result<&JobClient, EnqueueError> {
        self.jobs
            .get_or_try_init(|| JobClient::connect(&self.platform))
            .await
    }

    /// This tenant's channel `id`, from the process's cache.
    pub async fn channel(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<Arc<Channel>>, ChannelLookupError> {
        let routes = self
            .channels
            .get_or_try_init(|| {
                ChannelRoutes::start(
                    self.platform.config.redis_url.expose(),
                    &self.platform.config.redis_namespace,
                )
            })
            .await?;
        Ok(routes.of_tenant(&self.platform.db, tenant, id).await?)
    }

    /// Opens the vector store from the configuration (`QDRANT_URL`, else the
    /// embedded store under `DATA_DIR`, which only one process may own).
    pub async fn with_vectors(mut self) -> anyhow::Result<Self> {
        let config = &self.platform.config;
        let store = aigentable_vectors::connect(
            config.qdrant_url.as_deref(),
            config.qdrant_api_key.as_ref().map(|k| k.expose().as_str()),
            std::path::Path::new(&config.data_dir),
        )
        .await?;
        self.vectors = Some(store);
        Ok(self)
    }
}

pub use registry::{WorkerSetup, register, run, run_with};
