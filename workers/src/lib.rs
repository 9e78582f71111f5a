//! Worker processes: run jobs from the Redis queues against MongoDB and the
//! outside world, keeping each job's record and realtime events truthful.

pub mod handlers;
pub mod registry;
pub mod runner;

use aigentable_platform::Platform;

/// State injected into every job handler.
#[derive(Clone, Debug)]
pub struct WorkerState {
    pub platform: Platform,
}

pub use registry::run;
