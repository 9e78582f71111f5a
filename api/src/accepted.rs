//! The one body of every `202 Accepted`: the job that will do the work,
//! with the route's own fields beside it (`#[serde(flatten)]`), so a client
//! follows any accepted request the same way: `GET /jobs/{jobId}` or the
//! `job-updated` events of that id.

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;

use aigentable_jobs::JobRecord;

/// A job as it was accepted.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    /// `QUEUED`, or `RUNNING` when an identical job was already under way
    /// (that job is returned instead of a second one).
    pub status: String,
    pub queue: String,
    pub enqueued_at: DateTime<Utc>,
}

/// `{jobId, job}`: flattened into every 202 body.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedJob {
    /// Follow it at `GET /jobs/{jobId}` or in `job-updated` events.
    pub job_id: String,
    pub job: JobSummary,
}

impl From<&JobRecord> for AcceptedJob {
    fn from(r: &JobRecord) -> Self {
        Self {
            job_id: r.id.clone(),
            job: JobSummary {
                id: r.id.clone(),
                job_type: r.job_type.clone(),
                status: r.status.as_str().to_owned(),
                queue: r.queue.clone(),
                enqueued_at: r.created_at,
            },
        }
    }
}
