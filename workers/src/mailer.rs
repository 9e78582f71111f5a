//! SMTP delivery, configured by `SMTP_URL` (e.g. `smtps://user:pass@host:465`
//! or `smtp://host:587?tls=required`; plain `smtp://host:port` for local relays).

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::runner::JobError;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks the URL and sender at start, so a typo stops the process
    /// instead of failing every email later.
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("SMTP_URL is invalid: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = from
            .parse()
            .map_err(|e| anyhow::anyhow!("EMAIL_FROM is invalid: {e}"))?;
        Ok(Self { transport, from })
    }

    pub async fn send(
        &self,
        to: &str,
        subject: &str,
        text: &str,
        message_id: &str,
    ) -> Result<(), JobError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| JobError::permanent(format!("recipient address is invalid: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{message_id}@aigentable>")))
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_owned())
            .map_err(|e| JobError::permanent(format!("email could not be built: {e}")))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            if e.is_permanent() {
                JobError::permanent(format!("the mail server refused the email: {e}"))
            } else {
                JobError::transient(format!("the mail server could not be reached: {e}"))
            }
        })
    }
}
