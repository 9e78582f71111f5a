//! `/agents`: an agent's routes together.
//!
//! - [`crud`]: create, list, search, read, change, delete;
//! - [`test`]: ask the agent a question (`POST /agents/{id}/test`);
//! - [`train`]: re-index its documents (`POST /agents/{id}/train`);
//! - [`evals`]: its evaluation sets and their runs (`/agents/{id}/evals`);
//! - [`eval_import`]: an evaluation set from a CSV or XLSX file.

pub mod crud;
pub mod eval_import;
pub mod evals;
pub mod test;
mod test_stream;
pub mod train;

use salvo::Router;

pub use crud::*;

/// Every route of an agent.
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("agents")
                .get(crud::list)
                .post(crud::create),
        )
        .push(
            Router::with_path("agents/{id}")
                .get(crud::get)
                .put(crud::update)
                .delete(crud::delete),
        )
        .push(Router::with_path("agents/{id}/test").post(test::test))
        .push(Router::with_path("agents/{id}/train").post(train::train))
        .push(
            Router::with_path("agents/{id}/evals")
                .get(evals::list_sets)
                .post(evals::create_set),
        )
        .push(Router::with_path("agents/{id}/evals/import").post(eval_import::import_set))
        .push(
            Router::with_path("agents/{id}/evals/{evalId}")
                .get(evals::get_set)
                .put(evals::update_set)
                .delete(evals::delete_set),
        )
        .push(
            Router::with_path("agents/{id}/evals/{evalId}/runs")
                .get(evals::list_runs)
                .post(evals::start_run),
        )
        .push(Router::with_path("agents/{id}/evals/{evalId}/runs/compare").get(evals::compare_runs))
        .push(Router::with_path("agents/{id}/evals/{evalId}/runs/{runId}").get(evals::get_run))
        .push(Router::with_path("search/agents").get(crud::search))
}
