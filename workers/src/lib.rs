//! Worker processes: run jobs from the Redis queues against MongoDB and the
//! outside world, keeping each job's record and realtime events truthful.

pub mod handlers;
pub mod mailer;
pub mod metrics;
pub mod registry;
pub mod runner;

use aigentable_platform::Platform;

/// State injected into every job handler.
#[derive(Clone, Debug)]
pub struct WorkerState {
    pub platform: Platform,
    /// `None` without `SMTP_URL`: emails then stay in the outbox.
    pub mailer: Option<mailer::Mailer>,
}

impl WorkerState {
    pub fn new(platform: Platform) -> anyhow::Result<Self> {
        let mailer = match &platform.config.smtp_url {
            Some(url) => Some(mailer::Mailer::new(
                url.expose(),
                &platform.config.email_from,
            )?),
            None => None,
        };
        Ok(Self { platform, mailer })
    }
}

pub use registry::{WorkerSetup, register, run, run_with};
