//! Authentication: password hashing, access tokens, revocation and
//! brute-force limits.

pub mod client_ip;
pub mod jwt;
pub mod password;
pub mod rate_limit;
pub mod revocation;

pub use jwt::{Claims, JwtError, TokenIssuer};
