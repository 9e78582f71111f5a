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
    /// Every hashing slot is taken and the waiting line is full.
    #[error("too many password checks at once")]
    Busy,
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

/// Bounds the password hashes computed at once: each takes 19 MiB and tens
/// of milliseconds of a core, so a flood of logins or sign-ups would
/// otherwise exhaust memory and starve every other request. Up to
/// `concurrency` run, `queue` more wait; beyond that, or after waiting
/// [`Hasher::MAX_WAIT`], the caller is told [`PasswordError::Busy`] at once.
#[derive(Debug, Clone)]
pub struct Hasher {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
}

/// Releases the admission when the hash is done (or its caller gave up).
struct Admission<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Hasher {
    pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency)),
            admitted: std::sync::Arc::default(),
            capacity: concurrency.saturating_add(queue),
        }
    }

    async fn run<T>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError>
    where
        T: Send + 'static,
    {
        use std::sync::atomic::Ordering;
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordError::Busy);
        }
        let _admission = Admission(&self.admitted);
        let permit = tokio::time::timeout(Self::MAX_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| PasswordError::Join)
    }

    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            hasher()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await?
    }

    /// Verifies in constant time; a malformed stored hash verifies as false.
    pub async fn verify(&self, password: &str, stored_hash: &str) -> Result<bool, PasswordError> {
        let password = password.to_owned();
        let stored = stored_hash.to_owned();
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }
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

    #[tokio::test]
    async fn a_full_hasher_refuses_at_once() -> Result<(), PasswordError> {
        let gate = Hasher::new(1, 1);
        let h = gate.hash("correct horse 1").await?;
        assert!(gate.verify("correct horse 1", &h).await?);
        // Eight at once through one slot and a line of one: most are refused.
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let gate = gate.clone();
                let h = h.clone();
                tokio::spawn(async move { gate.verify("wrong horse 1", &h).await })
            })
            .collect();
        let mut busy = 0;
        for t in tries {
            if matches!(t.await, Ok(Err(PasswordError::Busy))) {
                busy += 1;
            }
        }
        assert!(busy >= 1, "{busy} refused");
        // And the gate is whole again afterwards.
        assert!(gate.verify("correct horse 1", &h).await?);
        Ok(())
    }
}
