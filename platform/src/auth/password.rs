//! argon2id password hashes. Hashing is deliberately slow, so it runs on the
//! blocking pool instead of stalling the async runtime.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
    rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// The algorithm and version new hashes use ([`hasher`], [`hash_in`]).
const ALGORITHM: Algorithm = Algorithm::Argon2id;
const VERSION: Version = Version::V0x13;

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(ALGORITHM, VERSION, params)
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
///
/// The hashes' working memory is kept between them and given back to the
/// system once none has run for [`Hasher::KEEP_WARM`] ([`WorkingMemory`]).
#[derive(Debug, Clone)]
pub struct Hasher {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    memory: Arc<WorkingMemory>,
}

/// argon2's working memory, kept between hashes for a while. A fresh 19 MiB
/// costs a hash thousands of page faults: a login took 19.1 ms at p50 with
/// fresh memory against 11.9 ms with reused memory (`auth_bench`,
/// 2026-12-04). Kept for good, it would be 19 MiB per hashing slot of an
/// api that nobody logs in to any more. So a burst reuses it, and once no
/// hash has run for `keep_warm` it is freed, which gives it back to the
/// system (`aigentable_allocator`). At most one block per slot exists, as
/// each running hash holds the one it took.
#[derive(Debug)]
struct WorkingMemory {
    keep_warm: Duration,
    state: Mutex<Spare>,
}

#[derive(Debug, Default)]
struct Spare {
    blocks: Vec<Vec<Block>>,
    last_used: Option<Instant>,
    release_pending: bool,
}

impl WorkingMemory {
    fn new(keep_warm: Duration) -> Arc<Self> {
        Arc::new(Self {
            keep_warm,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Spare> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A spare block, or an empty one that the hash sizes (and so faults in).
    fn take(&self) -> Vec<Block> {
        self.state().blocks.pop().unwrap_or_default()
    }

    /// Keeps `blocks` for the next hash and makes sure a release is due.
    fn give_back(self: &Arc<Self>, blocks: Vec<Block>, runtime: &tokio::runtime::Handle) {
        let arm = {
            let mut state = self.state();
            state.blocks.push(blocks);
            state.last_used = Some(Instant::now());
            !std::mem::replace(&mut state.release_pending, true)
        };
        if arm {
            runtime.spawn(Arc::clone(self).release_when_idle());
        }
    }

    async fn release_when_idle(self: Arc<Self>) {
        let released = loop {
            // Checked and taken under one lock, so a block given back in
            // between is never freed early.
            let wait = {
                let mut state = self.state();
                let wait = state.last_used.map_or(Duration::ZERO, |t| {
                    self.keep_warm.saturating_sub(t.elapsed())
                });
                if wait.is_zero() {
                    state.release_pending = false;
                    break std::mem::take(&mut state.blocks);
                }
                wait
            };
            tokio::time::sleep(wait).await;
        };
        // Unmapping 19 MiB a block is the kernel's work: off the runtime.
        tokio::task::spawn_blocking(move || drop(released));
    }

    #[cfg(test)]
    fn spare(&self) -> usize {
        self.state().blocks.len()
    }
}

/// At least `count` blocks: the first `count` are what argon2 uses, and every
/// one is written before it is read, so what a previous hash left is harmless.
fn fit(memory: &mut Vec<Block>, count: usize) {
    if memory.len() < count {
        memory.resize(count, Block::default());
    }
}

/// What argon2's `hash_password` does, in the given working memory.
fn hash_in(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, PasswordError> {
    let failed = |e: argon2::password_hash::Error| PasswordError::Hash(e.to_string());
    let argon = hasher();
    let params = argon.params().clone();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
    fit(memory, params.block_count());
    let output = Output::init_with(
        params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
        |out| {
            Ok(argon.hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])?)
        },
    )
    .map_err(failed)?;
    let hash = PasswordHash {
        algorithm: ALGORITHM.ident(),
        version: Some(VERSION.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// What argon2's `verify_password` does, in the given working memory: the
/// stored hash's own algorithm, version and parameters, its output compared
/// in constant time. A malformed stored hash verifies as false.
fn verify_in(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    fit(memory, params.block_count());
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(expected.len(), |out| {
        Ok(argon.hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])?)
    })
    .is_ok_and(|computed| computed == expected)
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
    /// How long the hashes' working memory is kept after the last one.
    pub const KEEP_WARM: Duration = Duration::from_secs(10);

    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self::keeping_memory_for(concurrency, queue, Self::KEEP_WARM)
    }

    fn keeping_memory_for(concurrency: usize, queue: usize, keep_warm: Duration) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency)),
            admitted: std::sync::Arc::default(),
            capacity: concurrency.saturating_add(queue),
            memory: WorkingMemory::new(keep_warm),
        }
    }

    async fn run<T>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, PasswordError>
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
        let memory = Arc::clone(&self.memory);
        // The block goes back even when the caller stopped waiting.
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut blocks = memory.take();
            let out = work(&mut blocks);
            memory.give_back(blocks, &runtime);
            drop(permit);
            out
        })
        .await
        .map_err(|_| PasswordError::Join)
    }

    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        self.run(move |memory| hash_in(memory, password.as_bytes()))
            .await?
    }

    /// Verifies in constant time; a malformed stored hash verifies as false.
    pub async fn verify(&self, password: &str, stored_hash: &str) -> Result<bool, PasswordError> {
        let password = password.to_owned();
        let stored = stored_hash.to_owned();
        self.run(move |memory| verify_in(memory, password.as_bytes(), &stored))
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

    fn reference_hash(
        algorithm: Algorithm,
        version: Version,
        params: Result<Params, argon2::Error>,
    ) -> Result<String, PasswordError> {
        let failed = |e: String| PasswordError::Hash(e);
        let params = params.map_err(|e| failed(e.to_string()))?;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(algorithm, version, params)
            .hash_password(b"correct horse 1", &salt)
            .map(|h| h.to_string())
            .map_err(|e| failed(e.to_string()))
    }

    #[tokio::test]
    async fn hashes_in_kept_memory_agree_with_argon2s_own() -> Result<(), PasswordError> {
        let gate = Hasher::new(1, 1);
        let ours = gate.hash("correct horse 1").await?;
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        // argon2's own verifier takes ours, and ours takes argon2's own.
        assert!(verify("correct horse 1", &ours).await?);
        assert!(!verify("wrong horse 1", &ours).await?);
        let theirs = hash("correct horse 1").await?;
        assert!(gate.verify("correct horse 1", &theirs).await?);
        assert!(!gate.verify("wrong horse 1", &theirs).await?);
        // Hashes stored with other settings keep verifying: another algorithm
        // and version, less memory, or more memory than the kept block has.
        for stored in [
            reference_hash(
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(8 * 1024, 3, 1, Some(16)),
            )?,
            reference_hash(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(24 * 1024, 1, 2, Some(64)),
            )?,
        ] {
            assert!(gate.verify("correct horse 1", &stored).await?, "{stored}");
            assert!(!gate.verify("wrong horse 1", &stored).await?, "{stored}");
        }
        // A hash changed by one character, cut short or of another scheme.
        let last = ours.chars().last().unwrap_or('A');
        let changed = format!(
            "{}{}",
            &ours[..ours.len() - last.len_utf8()],
            if last == 'A' { 'B' } else { 'A' }
        );
        let cut = ours.rsplit_once('$').map_or("", |(head, _)| head);
        for stored in [
            changed.as_str(),
            cut,
            "not a hash",
            "$2b$12$abcdefghijklmnopqrstuv",
        ] {
            assert!(!gate.verify("correct horse 1", stored).await?, "{stored}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn working_memory_is_reused_then_given_back() -> Result<(), PasswordError> {
        // Long enough that a loaded machine does not release a block
        // between a hash and the check that follows it.
        let keep_warm = Duration::from_secs(2);
        let gate = Hasher::keeping_memory_for(2, 16, keep_warm);
        assert_eq!(gate.memory.spare(), 0);
        let h = gate.hash("correct horse 1").await?;
        assert_eq!(gate.memory.spare(), 1);
        // One after the other, one block serves them all (each fresh one
        // would be kept beside it).
        for _ in 0..3 {
            assert!(gate.verify("correct horse 1", &h).await?);
        }
        assert_eq!(gate.memory.spare(), 1);
        // Many at once through two slots: never more blocks than slots.
        let at_once: Vec<_> = (0..8)
            .map(|_| {
                let (gate, h) = (gate.clone(), h.clone());
                tokio::spawn(async move { gate.verify("correct horse 1", &h).await })
            })
            .collect();
        for check in at_once {
            assert!(matches!(check.await, Ok(Ok(true))));
        }
        let spare = gate.memory.spare();
        assert!((1..=2).contains(&spare), "{spare} blocks kept for 2 slots");
        // Given back once nothing has hashed for `keep_warm`, and again
        // after the next burst.
        for round in 0..2 {
            let since = Instant::now();
            while gate.memory.spare() > 0 {
                assert!(
                    since.elapsed() < keep_warm + Duration::from_secs(10),
                    "round {round}: still kept"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(gate.verify("correct horse 1", &h).await?);
            assert_eq!(gate.memory.spare(), 1);
        }
        Ok(())
    }
}
