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
use aigentable_vectors::VectorStore;

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
        })
    }

    /// The job client follow-up jobs are enqueued with.
    pub async fn jobs(&self) -> Result<&JobClient, EnqueueError> {
        self.jobs
            .get_or_try_init(|| JobClient::connect(&self.platform))
            .await
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
