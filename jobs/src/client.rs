//! Enqueueing: the MongoDB record first, then the Redis push, so a worker
//! never picks up a job whose record does not exist. The record is the
//! source of truth (an outbox): a job recorded but not pushed (Redis
//! unreachable, a crash in between) stays QUEUED, is pushed again in the
//! background while Redis comes back, and the sweep's reconciler pushes any
//! that are still missing from Redis after a minute.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use chrono::Utc;
use redis::aio::ConnectionManager;

use aigentable_platform::Platform;
use aigentable_platform::db::{Db, DbError};
use aigentable_platform::ids::{JobId, TenantId, UserId};

use crate::queue::{self, QueueKeys};
use crate::record::{JobRecord, JobStatus};
use crate::{Envelope, Job};

/// A claim is followed by its job's record within this time, unless its
/// enqueue died in between (then the key is taken over).
const FRESH_CLAIM: Duration = Duration::from_secs(15);

/// The outcome of [`JobClient::claim_key`].
enum Claim {
    Ours,
    Held(Box<JobRecord>),
}

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
    /// Every registered job type's keys, built once (seventeen strings
    /// each, otherwise formatted again for every enqueue).
    keys: Arc<HashMap<&'static str, QueueKeys>>,
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
        let namespace = platform.config.redis_namespace.clone();
        let keys = crate::types::all()
            .into_iter()
            .map(|k| (k.name, QueueKeys::for_kind(&namespace, k.queue, k.name)))
            .collect();
        Ok(Self {
            db: platform.db.clone(),
            conn,
            namespace,
            keys: Arc::new(keys),
        })
    }

    /// The keys of `J`'s queue.
    fn keys_of<J: Job>(&self) -> Cow<'_, QueueKeys> {
        match self.keys.get(J::NAME) {
            Some(keys) => Cow::Borrowed(keys),
            None => Cow::Owned(QueueKeys::for_job::<J>(&self.namespace)),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Records and queues a job. With an idempotency key, a job of the same
    /// type and key that is still queued or running is returned instead.
    /// This holds under concurrency: the key is claimed in Redis by one
    /// script before the record is written (see [`JobClient::claim_key`]),
    /// so of two enqueues racing with one key exactly one records a job.
    pub async fn enqueue<J: Job>(
        &self,
        tenant: &TenantId,
        requester: Requester,
        job: J,
    ) -> Result<JobRecord, EnqueueError> {
        let jobs = self.db.scoped::<JobRecord>(tenant);
        let key = job.idempotency_key().filter(|_| J::RECORDED);
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
        let keys = self.keys_of::<J>();
        let field = key.as_ref().map(|key| format!("{tenant}:{key}"));
        if let Some(field) = &field {
            match self.claim_key(&keys, tenant, field, &record.id).await {
                Ok(Claim::Ours) => {}
                Ok(Claim::Held(holder)) => {
                    self.ensure_queued::<J>(&holder).await;
                    return Ok(*holder);
                }
                Err(EnqueueError::Queue(e)) => {
                    // Redis is down, so the job cannot be queued now either;
                    // it is recorded (the outbox) after the best check the
                    // database alone can make.
                    tracing::warn!(tenant_id = %tenant, job_type = J::NAME, error = %e, "idempotency key not claimed, checking the records only");
                    if let Some(existing) = jobs
                        .find_one(doc! {
                            "type": J::NAME,
                            "idempotencyKey": key.as_deref(),
                            "status": { "$in": [JobStatus::Queued.as_str(), JobStatus::Running.as_str()] },
                        })
                        .await?
                    {
                        return Ok(existing);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = jobs.insert(&record).await {
            if let Some(field) = &field {
                let mut conn = self.conn.clone();
                if let Err(undo) = queue::unclaim_key(&mut conn, &keys, field, &record.id).await {
                    tracing::warn!(tenant_id = %tenant, job_type = J::NAME, error = %undo, "idempotency key of an unrecorded job not given back");
                }
            }
            return Err(e.into());
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

    /// Queues an unrecorded job carrying only those of `items` (each with
    /// its dedup key) that no job carried in the last `dedup_ttl`, in one
    /// Redis round trip: the keys are set and the job pushed by one script.
    /// `job` is encoded with the items in its `items` field, which `J`
    /// must leave out of its encoding while empty (`#[serde(default,
    /// skip_serializing_if = "Vec::is_empty")]`) and which `job` leaves
    /// empty: the script writes the fresh ones first in the payload.
    /// Answers the job id and how many items it carries, or `None` when
    /// every item was a duplicate (nothing queued).
    pub async fn enqueue_fresh<J: Job, I: serde::Serialize>(
        &self,
        tenant: &TenantId,
        job: J,
        items: &[(String, I)],
        dedup_ttl: Duration,
    ) -> Result<Option<(String, usize)>, EnqueueError> {
        debug_assert!(!J::RECORDED, "a recorded job is queued with enqueue");
        let id = JobId::new().into_inner();
        let encode = |e: serde_json::Error| EnqueueError::Encode(e.to_string());
        // Encoded straight to text (a payload such as a webhook's raw body
        // is copied, not parsed into a tree and written out again).
        let text = serde_json::to_string(&Envelope {
            job_id: id.clone(),
            tenant_id: tenant.to_string(),
            payload: job,
        })
        .map_err(encode)?;
        let (head, tail) = split_for_items(&text, &id, tenant.as_str()).map_err(encode)?;
        // A job type that writes its empty items would get them twice, and
        // its worker could not read it back: caught in tests.
        debug_assert!(
            serde_json::from_str::<Envelope<J>>(&format!("{head}[]{tail}")).is_ok(),
            "{} must leave its items out while empty",
            J::NAME
        );
        let items = items
            .iter()
            .map(|(key, item)| Ok((key.clone(), serde_json::to_string(item).map_err(encode)?)))
            .collect::<Result<Vec<_>, EnqueueError>>()?;
        let keys = self.keys_of::<J>();
        let mut conn = self.conn.clone();
        let fresh = queue::push_fresh(
            &mut conn,
            &keys,
            (&id, tenant.as_str()),
            (head.as_str(), tail.as_str()),
            &items,
            dedup_ttl,
        )
        .await
        .map_err(|e| EnqueueError::Queue(e.to_string()))?;
        if fresh == 0 {
            return Ok(None);
        }
        tracing::debug!(job_id = %id, tenant_id = %tenant, job_type = J::NAME, items = fresh, "job queued with its fresh items");
        Ok(Some((id, fresh)))
    }

    /// Takes the idempotency key `field` for the job `ours`, still to be
    /// recorded, or answers the active job that holds it. A key whose job
    /// has ended is taken over (settling a job frees its key too; this
    /// covers jobs ended outside the queue, e.g. cancelled). A holder whose
    /// record cannot be read yet has just claimed and is recording: it is
    /// waited for, and taken over only once it has been silent for
    /// [`FRESH_CLAIM`] (it died between its claim and its record).
    async fn claim_key(
        &self,
        keys: &QueueKeys,
        tenant: &TenantId,
        field: &str,
        ours: &str,
    ) -> Result<Claim, EnqueueError> {
        let jobs = self.db.scoped::<JobRecord>(tenant);
        let mut conn = self.conn.clone();
        let mut ended: Option<String> = None;
        let mut pause = Duration::from_millis(2);
        loop {
            let holder = queue::claim_key(&mut conn, keys, field, ours, ended.as_deref())
                .await
                .map_err(|e| EnqueueError::Queue(e.to_string()))?;
            if holder.job_id == ours {
                return Ok(Claim::Ours);
            }
            match jobs.find_by_id(&holder.job_id).await? {
                Some(record) if matches!(record.status, JobStatus::Queued | JobStatus::Running) => {
                    return Ok(Claim::Held(Box::new(record)));
                }
                None if holder.age < FRESH_CLAIM => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    ended = None;
                }
                // Ended, or claimed long ago and never recorded.
                _ => ended = Some(holder.job_id),
            }
        }
    }

    /// Pushes a QUEUED job found under an idempotency key again: its
    /// enqueue may have died between the record and the push, and the
    /// caller asking again must not wait for the sweep. Pushing a job Redis
    /// already holds (queued, waiting for a retry or running) does nothing.
    async fn ensure_queued<J: Job>(&self, holder: &JobRecord) {
        if holder.status != JobStatus::Queued {
            return;
        }
        let payload = match bson::from_bson::<J>(holder.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(job_id = %holder.id, job_type = J::NAME, error = %e, "stored payload not readable, left to the sweep");
                return;
            }
        };
        if let Err(e) = self.push(&holder.id, &holder.tenant_id, payload).await {
            tracing::debug!(job_id = %holder.id, error = %e, "queued job not pushed again, the sweep will");
        }
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
                Ok(_) => {
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

    /// Pushes an already recorded job (also used by retry), or an
    /// unrecorded one under an id of the caller's. Pushing a job that is
    /// still queued, waiting for a retry or running does nothing (answers
    /// `false`), so a double click cannot run it twice; a dead or finished
    /// job starts afresh.
    pub async fn push<J: Job>(
        &self,
        job_id: &str,
        tenant: &TenantId,
        payload: J,
    ) -> Result<bool, EnqueueError> {
        let envelope = Envelope {
            job_id: job_id.to_owned(),
            tenant_id: tenant.to_string(),
            payload,
        };
        let keys = self.keys_of::<J>();
        let mut conn = self.conn.clone();
        queue::push(&mut conn, &keys, &[(job_id.to_owned(), envelope)])
            .await
            .map(|queued| queued > 0)
            .map_err(|e| EnqueueError::Queue(e.to_string()))
    }
}

/// An envelope's text cut where its payload's `items` go: right after
/// `"payload":{`, whose position the envelope's own fields fix.
fn split_for_items(
    text: &str,
    job_id: &str,
    tenant: &str,
) -> Result<(String, String), serde_json::Error> {
    let open = format!(
        "{{\"jobId\":{},\"tenantId\":{},\"payload\":{{",
        serde_json::to_string(job_id)?,
        serde_json::to_string(tenant)?
    );
    let Some(rest) = text.strip_prefix(open.as_str()) else {
        return Err(serde::ser::Error::custom(
            "the envelope does not start with its job id, tenant and payload",
        ));
    };
    let tail = if rest.starts_with('}') {
        rest.to_owned()
    } else {
        format!(",{rest}")
    };
    Ok((format!("{open}\"items\":"), tail))
}

#[cfg(test)]
mod tests {
    use super::split_for_items;

    #[test]
    fn the_items_go_first_in_the_payload_whatever_it_holds() {
        // A raw body that itself holds "items" and a payload's own text.
        let text =
            r#"{"jobId":"j1","tenantId":"t1","payload":{"raw":{"items":[1],"payload":{}},"n":2}}"#;
        let (head, tail) = split_for_items(text, "j1", "t1").expect("split");
        let joined = format!("{head}[{{\"a\":1}}]{tail}");
        let v: serde_json::Value = serde_json::from_str(&joined).expect("json");
        assert_eq!(v["payload"]["items"], serde_json::json!([{"a": 1}]));
        assert_eq!(v["payload"]["raw"]["items"], serde_json::json!([1]));
        assert_eq!(v["payload"]["n"], 2);

        let (head, tail) =
            split_for_items(r#"{"jobId":"j1","tenantId":"t1","payload":{}}"#, "j1", "t1")
                .expect("split an empty payload");
        assert_eq!(
            format!("{head}[]{tail}"),
            r#"{"jobId":"j1","tenantId":"t1","payload":{"items":[]}}"#
        );

        assert!(
            split_for_items(r#"{"tenantId":"t1","jobId":"j1","payload":{}}"#, "j1", "t1").is_err()
        );
    }
}
