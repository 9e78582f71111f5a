//! `deliver_reply`: sends a message the platform wrote, a bot reply or a
//! notice (see [`super::delivery`]); unrecorded, the message's status is its
//! record.

use serde_json::Value;

use aigentable_jobs::Job;
use aigentable_jobs::types::DeliverReply;

use super::delivery::{Delivery, deliver};
use crate::runner::{Handle, JobContext, JobError};

impl Handle for DeliverReply {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let what = Delivery {
            message_id: &self.message_id,
            channel_id: &self.channel_id,
            max_attempts: Self::MAX_ATTEMPTS,
            ready: self.ready.as_deref(),
            take_stored_claim: self.take_stored_claim,
        };
        deliver(&ctx, &what).await
    }
}
