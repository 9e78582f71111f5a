//! The typed job contract shared by the api, the workers and the scheduler.
//!
//! One module per job type under [`types`], each implementing [`Job`] with a
//! pinned queue name (never the Rust type name), attempts, timeout and
//! idempotency key. [`client::JobClient`] records a job in MongoDB and then
//! pushes it to Redis; [`queue`] is the Redis queue and its apalis backend;
//! [`record`] is the status record users poll.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod answer;
pub mod client;
pub mod dispatch;
pub mod events;
pub mod held;
pub mod queue;
pub mod queues;
pub mod record;
pub mod types;

pub use client::{EnqueueError, JobClient, Requester};
pub use queues::Queue;
pub use record::{JobRecord, JobStatus};

/// A kind of background work.
pub trait Job: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// Stable name, stored in job records (`type`) and shown to users.
    const NAME: &'static str;
    /// The queue it travels on; several job types may share one.
    const QUEUE: Queue;
    const MAX_ATTEMPTS: u32;
    const TIMEOUT: Duration;
    /// Whether the job has a MongoDB status record (shown by `GET /jobs`).
    /// Opting out are jobs whose state lives elsewhere, which users do not
    /// start: a webhook on its way in (`receive_inbound`), the reply to a
    /// customer's message (`answer_message`, the conversation), a bot
    /// reply's delivery (`deliver_reply`, the message's status), and the
    /// benchmark's no-op job, which measures the queue alone.
    const RECORDED: bool = true;

    /// Jobs with the same key in the same tenant are not enqueued twice while
    /// one is still queued or running.
    fn idempotency_key(&self) -> Option<String> {
        None
    }
}

/// What travels through Redis: the payload plus the id of its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<J> {
    pub job_id: String,
    pub tenant_id: String,
    pub payload: J,
}

/// The Redis queue key of a queue in this deployment's namespace.
pub fn queue_key(namespace: &str, queue: &str) -> String {
    format!("{namespace}:queue:{queue}")
}
