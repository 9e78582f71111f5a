use std::time::Duration;

use serde::{Deserialize, Serialize};

use aigentable_platform::model::Message;

use crate::{Job, Queue};

/// Sends a message the platform wrote itself (a bot reply, a notice to
/// the customer), queued by the job that stored it. No job record: the
/// message's own status is the record (`QUEUED` until a run claims it,
/// or `SENDING` from the start when stored claimed for its first run, then
/// its outcome), and the sweep queues a delivery again for a message left
/// `QUEUED` or `SENDING` (see [`DeliverReply::job_id`]).
/// A staff member's message goes through the recorded `deliver_message`,
/// which its sender can follow in `GET /jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverReply {
    /// The stored outbound message to send.
    pub message_id: String,
    /// The channel to send through.
    pub channel_id: String,
    /// The message and its recipient as the reply job stored them a moment
    /// before, so that the first run need not read the message and its
    /// conversation again. A retry, or a delivery the sweep queued, reads
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Box<ReadyReply>>,
    /// Queued again by the reply job's retry for a reply it read stored
    /// `SENDING`, claimed for a first run that may never have been queued.
    /// No run of this delivery was queued or running when this one was
    /// (one job id per message, and Redis keeps a job until its run has
    /// stored the outcome), so a run that still finds the reply claimed and
    /// untouched takes that claim over and sends at once. Without it, a run
    /// finding a reply so (one the sweep queued: Redis may have lost a run
    /// that is sending it) waits the claim out and sends it as a resend.
    /// The reply itself is read by the run, never carried: the first run
    /// may have sent it between the retry's read and this push.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_stored_claim: bool,
}

/// A bot reply just stored `QUEUED`, or `SENDING` when stored claimed for
/// the first run (first in line, in a workspace that delivers at least
/// once), on a conversation the bot answered when it was stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyReply {
    pub message: Message,
    /// The conversation's customer (`externalUserId`).
    pub to: String,
    /// No earlier outbound message of the conversation was on its way when
    /// the reply was stored, so the first run need not look for one to
    /// send first.
    #[serde(default)]
    pub first_in_line: bool,
}

impl DeliverReply {
    /// One id per message: queueing the delivery of a message whose
    /// delivery is already queued or running does nothing (see
    /// [`crate::JobClient::push`]).
    pub fn job_id(&self) -> String {
        format!("deliver-{}", self.message_id)
    }
}

impl Job for DeliverReply {
    const NAME: &'static str = "deliver_reply";
    const QUEUE: Queue = Queue::Outbound;
    const MAX_ATTEMPTS: u32 = 6;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const RECORDED: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_one_delivery_id() {
        let job = DeliverReply {
            message_id: "m1".into(),
            channel_id: "ch1".into(),
            ready: None,
            take_stored_claim: false,
        };
        assert_eq!(job.job_id(), "deliver-m1");
        assert_eq!(job.job_id(), job.clone().job_id());
    }
}
