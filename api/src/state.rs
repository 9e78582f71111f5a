use salvo::Depot;

use aigentable_jobs::JobClient;
use aigentable_platform::Platform;

use crate::metrics::Metrics;

/// Everything a handler needs, injected into the depot once per request.
#[derive(Clone, Debug)]
pub struct AppState {
    pub platform: Platform,
    pub jobs: JobClient,
    pub metrics: Metrics,
    pub started_at: std::time::Instant,
}

pub fn app(depot: &Depot) -> &AppState {
    match depot.get_typed::<AppState>() {
        Ok(state) => state,
        // The state hoop wraps every route; reaching this is a wiring bug.
        Err(_) => unreachable!("AppState is injected on the root router"),
    }
}
