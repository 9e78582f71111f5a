pub mod auth;
pub mod health;
pub mod jobs;
pub mod system;
pub mod tenants;
pub mod users;
