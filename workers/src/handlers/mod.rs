//! One handler module per job type.

pub mod send_email;
