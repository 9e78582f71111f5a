//! One handler module per job type.

pub mod noop;
pub mod send_email;
