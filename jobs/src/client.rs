//! Enqueueing: the MongoDB record first, then the Redis push, so a worker
//! never picks up a job whose record does not exist.

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisStorage};
use bson::doc;
use chrono::Utc;

use aigentable_platform::Platform;
use aigentable_platform::db::{Db, DbError};
use aigentable_platform::ids::{JobId, TenantId, UserId};

use crate::record::{self, JobRecord, JobStatus};
use crate::{Envelope, Job, queue_key};

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("could not record the job: {0}")]
    Db(#[from] DbError),
    #[error("could not encode the job payload: {0}")]
    Encode(String),
    #[error("the job queue is unavailable: {0}")]
    Queue(String),
}

/// Who asked for the work, shown in the job record.
#[derive(Debug, Clone)]
pub enum Requester {
    User(UserId),
    System,
}

impl Requester {
    fn as_string(&self) -> String {
        match self {
            Requester::User(id) => id.to_string(),
            Requester::System => "system".to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct JobClient {
    db: Db,
    conn: ConnectionManager,
    namespace: String,
}

impl std::fmt::Debug for JobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobClient")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The apalis-redis storage of one job type. Each type has its own Redis
/// queue (`{namespace}:queue:{QUEUE}:{NAME}`) because a storage is typed.
pub fn storage_for<J: Job>(conn: ConnectionManager, namespace: &str) -> RedisStorage<Envelope<J>> {
    let config =
        QueueConfig::default().queue(format!("{}:{}", queue_key(namespace, J::QUEUE), J::NAME));
    RedisStorage::new(conn).with_config(config)
}

impl JobClient {
    pub async fn connect(platform: &Platform) -> Result<Self, EnqueueError> {
        let conn = apalis_redis::connect(platform.config.redis_url.expose().as_str())
            .await
            .map_err(|e| EnqueueError::Queue(e.to_string()))?;
        Ok(Self {
            db: platform.db.clone(),
            conn,
            namespace: platform.config.redis_namespace.clone(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Records and queues a job. With an idempotency key, a job of the same
    /// type and key that is still queued or running is returned instead.
    pub async fn enqueue<J: Job>(
        &self,
        tenant: &TenantId,
        requester: Requester,
        job: J,
    ) -> Result<JobRecord, EnqueueError> {
        let jobs = self.db.scoped::<JobRecord>(tenant);
        let key = job.idempotency_key();
        if let Some(key) = &key {
            let existing = jobs
                .find_one(doc! {
                    "type": J::NAME,
                    "idempotencyKey": key,
                    "status": { "$in": [JobStatus::Queued.as_str(), JobStatus::Running.as_str()] },
                })
                .await?;
            if let Some(existing) = existing {
                return Ok(existing);
            }
        }

        let now = Utc::now();
        let record = JobRecord {
            id: JobId::new().into_inner(),
            tenant_id: tenant.clone(),
            job_type: J::NAME.to_owned(),
            queue: J::QUEUE.to_owned(),
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            max_attempts: J::MAX_ATTEMPTS,
            last_error: None,
            result: None,
            payload: bson::to_bson(&job).map_err(|e| EnqueueError::Encode(e.to_string()))?,
            idempotency_key: key,
            created_by: requester.as_string(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        jobs.insert(&record).await?;

        if let Err(e) = self.push(&record.id, tenant, job).await {
            tracing::error!(job_id = %record.id, tenant_id = %tenant, error = %e, "job could not be queued");
            record::mark_failed(
                &self.db,
                tenant,
                &record.id,
                JobStatus::Failed,
                "the job queue was unavailable",
            )
            .await?;
            return Err(e);
        }
        tracing::debug!(job_id = %record.id, tenant_id = %tenant, job_type = J::NAME, "job queued");
        Ok(record)
    }

    /// Pushes an already recorded job (also used by retry).
    pub async fn push<J: Job>(
        &self,
        job_id: &str,
        tenant: &TenantId,
        payload: J,
    ) -> Result<(), EnqueueError> {
        let envelope = Envelope {
            job_id: job_id.to_owned(),
            tenant_id: tenant.to_string(),
            payload,
        };
        let task = TaskBuilder::new(envelope)
            .task_id(TaskId::from_string(job_id))
            .max_attempts(J::MAX_ATTEMPTS as usize)
            .build();
        let mut storage = storage_for::<J>(self.conn.clone(), &self.namespace);
        storage
            .push_task(task)
            .await
            .map_err(|e| EnqueueError::Queue(e.to_string()))
    }
}
