//! `/agents`: an agent's routes together.
//!
//! - [`crud`]: create, list, search, read, change, delete;
//! - [`test`]: ask the agent a question (`POST /agents/{id}/test`);
//! - [`train`]: re-index its documents (`POST /agents/{id}/train`).

pub mod crud;
pub mod test;
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
        .push(Router::with_path("search/agents").get(crud::search))
}
