use salvo::Depot;

use aigentable_jobs::JobClient;
use aigentable_platform::Platform;

use crate::metrics::Metrics;

/// Everything a handler needs, injected into the depot once per request.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub jobs: JobClient,
    /// The Qdrant server when `QDRANT_URL` is set; otherwise searches go
    /// through the workers, which own the embedded store.
    pub vectors: Option<std::sync::Arc<dyn aigentable_vectors::VectorStore>>,
    pub metrics: Metrics,
    /// Channels by routing key and id, for the webhooks (no database read
    /// per delivery; see `platform::channels::routes`).
    pub routes: aigentable_platform::channels::routes::ChannelRoutes,
    pub started_at: std::time::Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("platform", &self.platform)
            .field("vectors", &self.vectors.is_some())
            .finish_non_exhaustive()
    }
}

pub fn app(depot: &Depot) -> &AppState {
    match depot.get_typed::<AppState>() {
        Ok(state) => state,
        // The state hoop wraps every route; reaching this is a wiring bug.
        Err(_) => unreachable!("AppState is injected on the root router"),
    }
}
