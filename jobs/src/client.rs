//! Enqueueing: the MongoDB record first, then the Redis push, so a worker
//! never picks up a job whose record does not exist. The record is the
//! source of truth (an outbox): a job recorded but not pushed (Redis
//! unreachable, a crash in between) stays QUEUED, is pushed again in the
//! background while Redis comes back, and the sweep's reconciler pushes any
//! that are still missing from Redis after a minute.

use std::time::Duration;

use bson::doc;
use chrono::Utc;
use redis::aio::ConnectionManager;

use aigentable_platform::Platform;
use aigentable_platform::db::{Db, DbError};
use aigentable_platform::ids::{JobId, TenantId, UserId};

use crate::queue::{self, QueueKeys};
use crate::record::{self, JobRecord, JobStatus, KeyClaim};
use crate::{Envelope, Job};

/// Rounds of [`JobClient::claim_key`] before a job is recorded without its key.
const CLAIM_ROUNDS: usize = 50;
/// A claim younger than this always names a recorded job.
const FRESH_CLAIM: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

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

impl JobClient {
    pub async fn connect(platform: &Platform) -> Result<Self, EnqueueError> {
        let conn = queue::connect(platform.config.redis_url.expose().as_str())
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
    /// type and key that is still queued or running is returned instead;
    /// this holds under concurrency: the key is claimed in
    /// [`record::KEY_CLAIMS`] after the record is inserted, and the loser
    /// of a race deletes its record and answers the winner's job.
    pub async fn enqueue<J: Job>(
        &self,
        tenant: &TenantId,
        requester: Requester,
        job: J,
    ) -> Result<JobRecord, EnqueueError> {
        let jobs = self.db.scoped::<JobRecord>(tenant);
        let key = job.idempotency_key();
        let (jobs, key_ref) = (&jobs, &key);
        let active = move || async move {
            match key_ref {
                Some(key) => {
                    jobs.find_one(doc! {
                        "type": J::NAME,
                        "idempotencyKey": key,
                        "status": { "$in": [JobStatus::Queued.as_str(), JobStatus::Running.as_str()] },
                    })
                    .await
                }
                None => Ok(None),
            }
        };
        if let Some(existing) = active().await? {
            return Ok(existing);
        }

        let now = Utc::now();
        let record = JobRecord {
            id: JobId::new().into_inner(),
            tenant_id: tenant.clone(),
            job_type: J::NAME.to_owned(),
            queue: J::QUEUE.as_str().to_owned(),
            status: JobStatus::Queued,
            progress: 0,
            attempts: 0,
            max_attempts: J::MAX_ATTEMPTS,
            last_error: None,
            result: None,
            payload: bson::to_bson(&job).map_err(|e| EnqueueError::Encode(e.to_string()))?,
            idempotency_key: key.clone(),
            created_by: requester.as_string(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        if !J::RECORDED {
            // Benchmark jobs measure the queue alone: no record to write.
            self.push(&record.id, tenant, job).await?;
            return Ok(record);
        }
        jobs.insert(&record).await?;
        if let Some(key) = &key
            && let Some(existing) = self.claim_key(tenant, J::NAME, key, &record.id).await?
        {
            // Another enqueue with this key won: its job is the one.
            jobs.delete_by_id(&record.id).await?;
            return Ok(existing);
        }

        if let Err(e) = self.push(&record.id, tenant, job.clone()).await {
            // Recorded, so accepted: it is queued as soon as Redis answers.
            tracing::warn!(job_id = %record.id, tenant_id = %tenant, job_type = J::NAME, error = %e, "job recorded but not queued yet, retrying in the background");
            let (client, id, tenant) = (self.clone(), record.id.clone(), tenant.clone());
            tokio::spawn(async move { client.push_later(&id, &tenant, job).await });
            return Ok(record);
        }
        tracing::debug!(job_id = %record.id, tenant_id = %tenant, job_type = J::NAME, "job queued");
        Ok(record)
    }

    /// Takes idempotency `key` for the recorded job `ours`. Answers the
    /// active job that holds it instead, if any; a key whose job has ended
    /// (or whose record is gone) is taken over. A job's record is always
    /// inserted before its claim, so a claim never names a job that is
    /// still to be recorded.
    async fn claim_key(
        &self,
        tenant: &TenantId,
        job_type: &str,
        key: &str,
        ours: &str,
    ) -> Result<Option<JobRecord>, EnqueueError> {
        let claims = self.db.scoped::<KeyClaim>(tenant);
        let jobs = self.db.scoped::<JobRecord>(tenant);
        let id = record::key_claim_id(tenant, job_type, key);
        // Bounded: each round either decides, lost a race to a newer claim
        // (which then holds an active job), or waits for a fresh claim's
        // record to be readable.
        let mut pause = Duration::from_millis(5);
        for _ in 0..CLAIM_ROUNDS {
            let claim = KeyClaim {
                id: id.clone(),
                tenant_id: tenant.clone(),
                job_id: ours.to_owned(),
                updated_at: Utc::now(),
            };
            match claims.insert(&claim).await {
                Ok(()) => return Ok(None),
                Err(DbError::Duplicate) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(current) = claims.find_by_id(&id).await? else {
                continue;
            };
            if current.job_id == ours {
                return Ok(None);
            }
            match jobs.find_by_id(&current.job_id).await? {
                Some(holder) if matches!(holder.status, JobStatus::Queued | JobStatus::Running) => {
                    return Ok(Some(holder));
                }
                // A claim is written after its job's record, so a fresh
                // claim whose record this read cannot see yet is a live job
                // (seen under concurrent enqueues): look again rather than
                // take it over and run the work twice.
                None if Utc::now() - current.updated_at < FRESH_CLAIM => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    continue;
                }
                // Ended, or gone long ago: the key is free.
                _ => {}
            }
            let taken = claims
                .update_one(
                    doc! { "_id": &id, "jobId": &current.job_id },
                    doc! { "$set": { "jobId": ours, "updatedAt": bson::DateTime::now() } },
                )
                .await?;
            if taken.is_some() {
                return Ok(None);
            }
        }
        tracing::warn!(tenant_id = %tenant, job_type, "idempotency key contended, job recorded without it");
        Ok(None)
    }

    /// Retries the push of a recorded job for about a minute, with growing
    /// pauses; past that the sweep's reconciler takes over.
    async fn push_later<J: Job>(&self, job_id: &str, tenant: &TenantId, job: J) {
        let mut pause = Duration::from_millis(250);
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(60) {
            tokio::time::sleep(pause).await;
            waited += pause;
            match self.push(job_id, tenant, job.clone()).await {
                Ok(()) => {
                    tracing::info!(job_id = %job_id, tenant_id = %tenant, job_type = J::NAME, "job queued after redis came back");
                    return;
                }
                Err(e) => {
                    tracing::debug!(job_id = %job_id, tenant_id = %tenant, error = %e, "job still not queued");
                }
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
        tracing::warn!(job_id = %job_id, tenant_id = %tenant, job_type = J::NAME, "job still not queued, the sweep will queue it");
    }

    /// Pushes an already recorded job (also used by retry). Pushing a job
    /// that is still queued, waiting for a retry or running does nothing,
    /// so a double click cannot run it twice; a dead job starts afresh.
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
        let keys = QueueKeys::for_job::<J>(&self.namespace);
        let mut conn = self.conn.clone();
        queue::push(&mut conn, &keys, &[(job_id.to_owned(), envelope)])
            .await
            .map(|_| ())
            .map_err(|e| EnqueueError::Queue(e.to_string()))
    }
}
