//! The wrapper every job runs in: marks the record running, applies the
//! timeout, turns panics into failures, decides retry / fail / dead, and
//! publishes `job-updated`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data};
use futures::FutureExt;
use serde_json::{Value, json};

use aigentable_jobs::events::{self, RealtimeEvent, names};
use aigentable_jobs::queue::{Claim, Deferral};
use aigentable_jobs::record::{self, JobRecord, JobStatus};
use aigentable_jobs::{Envelope, Job};
use aigentable_platform::ids::TenantId;

use crate::WorkerState;
use crate::metrics::{JobMetrics, Outcome};

/// Why a job attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying cannot help (bad input, missing record): fail at once.
    #[error("{0}")]
    Permanent(String),
    /// May succeed later (network, provider 5xx/429): retry with backoff.
    #[error("{0}")]
    Transient(String),
    /// Must wait for other work (a lock another job holds): the worker slot
    /// is given back and the job runs again `after`, no attempt spent.
    #[error("{reason}")]
    Defer { after: Duration, reason: String },
}

impl JobError {
    pub fn transient(e: impl std::fmt::Display) -> Self {
        JobError::Transient(e.to_string())
    }
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        JobError::Permanent(e.to_string())
    }
}

/// What a handler sees besides its payload.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub state: WorkerState,
    pub job_id: String,
    pub tenant_id: TenantId,
    pub attempt: u32,
    /// A run of this attempt began before and was stopped before its
    /// outcome (its lease lapsed, a shutdown's grace ran out), so the
    /// attempt was given back: its work may be partly done.
    pub resumed: bool,
}

impl JobContext {
    /// Whether no earlier run of this job began: what the job was queued
    /// with is still all that happened. A retry, or a run that resumes one
    /// stopped midway, must look at what the earlier runs did.
    pub fn first_run(&self) -> bool {
        self.attempt == 1 && !self.resumed
    }

    /// Queues a follow-up job of this job's tenant, on the platform's
    /// behalf (a reply, a held event).
    pub async fn enqueue_follow_up<F: Job>(&self, job: F) -> Result<JobRecord, JobError> {
        self.state
            .jobs()
            .await
            .map_err(JobError::transient)?
            .enqueue(&self.tenant_id, aigentable_jobs::Requester::System, job)
            .await
            .map_err(JobError::transient)
    }

    /// Queues an unrecorded job under `job_id` (its state lives elsewhere,
    /// such as a message's status). While a job with this id is queued,
    /// waiting for a retry or running, queueing it again does nothing
    /// (answers `false`).
    pub async fn enqueue_unrecorded<F: Job>(&self, job_id: &str, job: F) -> Result<bool, JobError> {
        debug_assert!(
            !F::RECORDED,
            "a recorded job is queued with enqueue_follow_up"
        );
        self.state
            .jobs()
            .await
            .map_err(JobError::transient)?
            .push(job_id, &self.tenant_id, job)
            .await
            .map_err(JobError::transient)
    }

    /// Whether the job was cancelled while it runs: a long handler may
    /// check between steps and stop early (its outcome is not recorded
    /// either way). A record that cannot be read counts as not cancelled.
    pub async fn cancelled(&self) -> bool {
        record::is_cancelled(&self.state.platform.db, &self.tenant_id, &self.job_id)
            .await
            .unwrap_or(false)
    }

    /// Records how far a long job got (0 to 100) and announces it with
    /// `job-updated`; a progress that cannot be written is only logged.
    pub async fn progress(&self, pct: u8) {
        match record::set_progress(&self.state.platform.db, &self.tenant_id, &self.job_id, pct)
            .await
        {
            Ok(rec) => announce(&self.state, rec).await,
            Err(e) => {
                tracing::warn!(job_id = %self.job_id, tenant_id = %self.tenant_id, error = %e, "job progress not recorded")
            }
        }
    }
}

/// A job type the workers know how to run.
pub trait Handle: Job {
    fn handle(self, ctx: JobContext) -> impl Future<Output = Result<Value, JobError>> + Send;
}

pub(crate) async fn announce(state: &WorkerState, record: Option<JobRecord>) {
    let Some(record) = record else { return };
    let event = RealtimeEvent {
        tenant_id: record.tenant_id.to_string(),
        conversation_id: None,
        event: names::JOB_UPDATED.to_owned(),
        data: json!({
            "id": record.id,
            "type": record.job_type,
            "status": record.status,
            "progress": record.progress,
            "attempts": record.attempts,
            "lastError": record.last_error,
            "createdBy": record.created_by,
        }),
    };
    if let Err(e) = events::publish(&state.platform.kv, &event).await {
        tracing::warn!(job_id = %record.id, error = %e, "could not publish job event");
    }
}

/// Records a failed attempt of the run holding `claim`. A record that
/// cannot be updated does not change what happens to the job (the queue
/// decides that); it is logged.
async fn record_failure(
    state: &WorkerState,
    tenant: &TenantId,
    job_id: &str,
    claim: &str,
    status: JobStatus,
    message: &str,
) {
    match record::mark_attempt_failed(&state.platform.db, tenant, job_id, claim, status, message)
        .await
    {
        Ok(rec) => announce(state, rec).await,
        Err(e) => {
            tracing::error!(job_id = %job_id, tenant_id = %tenant, status = status.as_str(), error = %e, "job record could not be updated")
        }
    }
}

/// Runs one attempt of a job. `attempt` is the count kept in Redis, which
/// includes runs interrupted by a crash: apalis's own counter restarts at
/// zero when a job is recovered from a dead worker.
pub async fn run_job<J: Handle>(
    envelope: Envelope<J>,
    state: Data<WorkerState>,
    metrics: Data<JobMetrics>,
    claim: Data<Claim>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let tenant = TenantId::from_trusted(envelope.tenant_id.clone());
    let job_id = envelope.job_id.clone();
    let attempt_no = u32::try_from(attempt.current()).unwrap_or(u32::MAX).max(1);
    let (outcome, result) =
        attempt_job(&state, envelope, &tenant, &job_id, &claim, attempt_no).await;
    metrics.record(outcome, started.elapsed());
    result
}

async fn attempt_job<J: Handle>(
    state: &WorkerState,
    envelope: Envelope<J>,
    tenant: &TenantId,
    job_id: &str,
    claim: &Claim,
    attempt_no: u32,
) -> (Outcome, Result<(), BoxDynError>) {
    let lease = &claim.lease;
    let resumed = claim.resumed;
    let claim = claim.token.as_str();
    let db = &state.platform.db;
    let recorded = J::RECORDED;

    if attempt_no > J::MAX_ATTEMPTS {
        // Every allowed attempt started and none reported back: the worker
        // died each time (e.g. the job crashes the process). Running it
        // again would likely do the same.
        let message = format!(
            "the job was interrupted {} times (its worker stopped while running it)",
            attempt_no - 1
        );
        if recorded {
            match record::mark_failed(db, tenant, job_id, JobStatus::Dead, &message).await {
                Ok(rec) => announce(state, rec).await,
                Err(e) => return (Outcome::Retried, Err(e.into())),
            }
        }
        tracing::warn!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, attempt = attempt_no, "job dead after repeated interruptions");
        return (
            Outcome::Dead,
            Err(AbortError::new(std::io::Error::other(message)).into()),
        );
    }

    if recorded {
        match record::mark_running(db, tenant, job_id, attempt_no, claim).await {
            Ok(Some(running)) => announce(state, Some(running)).await,
            Ok(None) => {
                tracing::info!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), "job skipped: cancelled, finished or unknown");
                return (Outcome::Skipped, Ok(()));
            }
            Err(e) => return (Outcome::Retried, Err(e.into())),
        }
    }
    let ctx = JobContext {
        state: state.clone(),
        job_id: job_id.to_owned(),
        tenant_id: tenant.clone(),
        attempt: attempt_no,
        resumed,
    };
    if resumed {
        tracing::info!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, attempt = attempt_no, "job resumes a run that was stopped midway");
    }
    let started = std::time::Instant::now();
    let work = AssertUnwindSafe(envelope.payload.handle(ctx)).catch_unwind();
    let outcome = tokio::select! {
        biased;
        () = lease.lapsed() => {
            return stop_unleased::<J>(state, tenant, job_id, claim).await;
        }
        finished = tokio::time::timeout(J::TIMEOUT, work) => match finished {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(JobError::Transient("the job crashed".to_owned())),
            Err(_) => Err(JobError::Transient(format!(
                "the job timed out after {} s",
                J::TIMEOUT.as_secs()
            ))),
        },
    };
    let elapsed_ms = started.elapsed().as_millis();

    match outcome {
        Ok(result) => {
            if recorded {
                let result = bson::to_bson(&result).unwrap_or(bson::Bson::Null);
                match record::mark_succeeded(db, tenant, job_id, claim, result).await {
                    Ok(Some(rec)) => announce(state, Some(rec)).await,
                    Ok(None) => {
                        tracing::warn!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), "job finished after it was cancelled or taken over by another run; its success is not recorded")
                    }
                    // The work is done; a retry would redo it. The record
                    // stays RUNNING, which the error log explains.
                    Err(e) => {
                        tracing::error!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), error = %e, "job succeeded but its record could not be updated")
                    }
                }
                tracing::info!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, attempt = attempt_no, elapsed_ms, "job succeeded");
            } else {
                tracing::debug!(job_id = %job_id, queue = J::QUEUE.as_str(), job_type = J::NAME, elapsed_ms, "job succeeded");
            }
            (Outcome::Succeeded, Ok(()))
        }
        Err(JobError::Defer { after, reason }) => {
            if recorded {
                match record::mark_released(db, tenant, job_id, claim, &reason).await {
                    Ok(rec) => announce(state, rec).await,
                    Err(e) => {
                        tracing::warn!(job_id = %job_id, tenant_id = %tenant, error = %e, "record of a deferred job not reset; it shows RUNNING until it runs again")
                    }
                }
            }
            tracing::debug!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, after_ms = after.as_millis(), reason = %reason, "job deferred");
            let deferral = Deferral {
                after,
                reason,
                interrupted: false,
            };
            (
                Outcome::Deferred,
                Err(std::io::Error::other(deferral.to_string()).into()),
            )
        }
        Err(JobError::Permanent(message)) => {
            if recorded {
                record_failure(state, tenant, job_id, claim, JobStatus::Failed, &message).await;
            }
            tracing::warn!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, error = %message, "job failed permanently");
            (
                Outcome::Failed,
                Err(AbortError::new(std::io::Error::other(message)).into()),
            )
        }
        Err(JobError::Transient(message)) if attempt_no >= J::MAX_ATTEMPTS => {
            if recorded {
                record_failure(state, tenant, job_id, claim, JobStatus::Dead, &message).await;
            }
            tracing::warn!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, attempt = attempt_no, error = %message, "job dead after its last attempt");
            (
                Outcome::Dead,
                Err(AbortError::new(std::io::Error::other(message)).into()),
            )
        }
        Err(JobError::Transient(message)) => {
            if recorded {
                record_failure(state, tenant, job_id, claim, JobStatus::Queued, &message).await;
            }
            tracing::info!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, attempt = attempt_no, error = %message, "job attempt failed, will retry");
            (Outcome::Retried, Err(std::io::Error::other(message).into()))
        }
    }
}

/// The run's lease lapsed (its worker could not renew it: cut off from
/// Redis, or stalled) or was reaped: another worker may run the job now, so
/// this run was dropped where it stood, as a crash would. The job goes back
/// to the queue without spending an attempt, its next run told that it
/// resumes; under a lease already reaped the queue ignores this outcome
/// (that next run counts an attempt) and the record is the new run's.
async fn stop_unleased<J: Handle>(
    state: &WorkerState,
    tenant: &TenantId,
    job_id: &str,
    claim: &str,
) -> (Outcome, Result<(), BoxDynError>) {
    const REASON: &str = "the worker could not renew its lease on the job; the run was stopped so that it never runs twice at once";
    if J::RECORDED {
        match record::mark_released(&state.platform.db, tenant, job_id, claim, REASON).await {
            Ok(rec) => announce(state, rec).await,
            Err(e) => {
                tracing::warn!(job_id = %job_id, tenant_id = %tenant, error = %e, "record of a stopped run not reset; the next run takes it over")
            }
        }
    }
    tracing::warn!(job_id = %job_id, tenant_id = %tenant, queue = J::QUEUE.as_str(), job_type = J::NAME, "run stopped: its lease lapsed");
    let deferral = Deferral {
        after: Duration::ZERO,
        reason: REASON.to_owned(),
        interrupted: true,
    };
    (
        Outcome::Stopped,
        Err(std::io::Error::other(deferral.to_string()).into()),
    )
}
