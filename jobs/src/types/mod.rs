//! One module per job type.

pub mod send_email;

pub use send_email::SendEmail;

/// Every queue a worker process serves by default.
pub const ALL_QUEUES: &[&str] = &[send_email::QUEUE];
