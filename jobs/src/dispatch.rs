//! Operations that start from a stored job record, whose type is only known
//! at run time (retry from the api, requeue from the sweep).

use aigentable_platform::ids::TenantId;

use crate::client::{EnqueueError, JobClient};
use crate::record::JobRecord;
use crate::{Job, JobStatus};

fn decode<J: Job>(record: &JobRecord) -> Result<J, EnqueueError> {
    bson::from_bson(record.payload.clone()).map_err(|e| {
        EnqueueError::Encode(format!("stored payload of {} is unreadable: {e}", J::NAME))
    })
}

/// Pushes the job a record describes onto its queue again.
pub async fn push_record(client: &JobClient, record: &JobRecord) -> Result<(), EnqueueError> {
    let tenant: &TenantId = &record.tenant_id;
    macro_rules! by_type {
        ($($t:path),* $(,)?) => {
            match record.job_type.as_str() {
                $(<$t as Job>::NAME => client.push::<$t>(&record.id, tenant, decode::<$t>(record)?).await.map(|_| ()),)*
                other => Err(EnqueueError::Encode(format!("unknown job type '{other}'"))),
            }
        };
    }
    crate::for_each_job_type!(by_type)
}

/// The timeout of a job type, by its stored name.
pub fn timeout_of(job_type: &str) -> Option<std::time::Duration> {
    crate::types::by_name(job_type).map(|k| k.timeout)
}

/// Whether a job in this status may be retried by a user.
pub fn retryable(status: JobStatus) -> bool {
    matches!(status, JobStatus::Failed | JobStatus::Dead)
}
