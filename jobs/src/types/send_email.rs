use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Job, Queue};

/// A transactional email (password reset, invitations...). Sent through SMTP
/// when configured; always recorded in the `outbox` collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// Why the email exists, e.g. `password_reset`: lets the outbox be
    /// filtered and lets a retry be recognised.
    pub purpose: String,
    /// Unique per logical email so that a retried job never sends it twice.
    pub dedupe_key: String,
    /// A one-time token (password reset, email verification) sealed with
    /// `DATA_ENCRYPTION_KEY`. The worker opens it and puts it where
    /// `subject` and `text` say [`SendEmail::TOKEN_PLACEHOLDER`], so the
    /// token is never stored in clear in the job record or its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_token: Option<String>,
}

impl SendEmail {
    pub const TOKEN_PLACEHOLDER: &'static str = "{{token}}";
}

impl Job for SendEmail {
    const NAME: &'static str = "send_email";
    const QUEUE: Queue = Queue::Emails;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn idempotency_key(&self) -> Option<String> {
        Some(self.dedupe_key.clone())
    }
}
