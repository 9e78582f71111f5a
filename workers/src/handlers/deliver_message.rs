//! `deliver_message`: sends a staff member's message (see [`super::delivery`]).

use serde_json::Value;

use aigentable_jobs::Job;
use aigentable_jobs::types::DeliverMessage;

use super::delivery::{Delivery, deliver};
use crate::runner::{Handle, JobContext, JobError};

impl Handle for DeliverMessage {
    async fn handle(self, ctx: JobContext) -> Result<Value, JobError> {
        let what = Delivery {
            message_id: &self.message_id,
            channel_id: &self.channel_id,
            max_attempts: Self::MAX_ATTEMPTS,
            ready: None,
            take_stored_claim: false,
        };
        deliver(&ctx, &what).await
    }
}
