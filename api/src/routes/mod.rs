pub mod auth;
pub mod health;
pub mod tenants;
pub mod users;
