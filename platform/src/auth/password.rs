//! argon2id password hashes. Hashing is deliberately slow, so it runs on the
//! blocking pool instead of stalling the async runtime.

use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed")]
    Join,
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub async fn hash(password: &str) -> Result<String, PasswordError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|_| PasswordError::Join)?
}

/// Verifies in constant time; a malformed stored hash verifies as false.
pub async fn verify(password: &str, stored_hash: &str) -> Result<bool, PasswordError> {
    let password = password.to_owned();
    let stored = stored_hash.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|_| PasswordError::Join)
}

/// A hash of a random password, verified against when the email is unknown so
/// that login takes as long for unknown accounts as for known ones.
pub async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            hash(&crate::crypto::random_token(24))
                .await
                .unwrap_or_default()
        })
        .await
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify_round_trip() -> Result<(), PasswordError> {
        let h = hash("correct horse 1").await?;
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse 1", &h).await?);
        assert!(!verify("wrong horse 1", &h).await?);
        assert!(!verify("correct horse 1", "not a hash").await?);
        Ok(())
    }
}
