//! LLM settings from the environment (see `.env.example`).

use std::time::Duration;

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// One LLM call's timeout (`LLM_TIMEOUT_SECONDS`, default 60).
    pub timeout: Duration,
    /// Texts per embeddings request (`EMBEDDING_BATCH_SIZE`, default 64).
    pub embedding_batch_size: usize,
    /// Retries of one embeddings batch after a 429, 5xx or timeout
    /// (`EMBEDDING_MAX_RETRIES`, default 6) before the job itself fails
    /// and is retried later by the queue.
    pub embedding_max_retries: u32,
    /// Longest wait between two tries of a batch, `Retry-After` included
    /// (`EMBEDDING_MAX_BACKOFF_SECONDS`, default 60).
    pub embedding_max_backoff: Duration,
    /// Embeddings requests in flight per tenant across every worker
    /// process (`EMBEDDING_TENANT_CONCURRENCY`, default 2), so that one
    /// tenant's bulk upload cannot take every slot of the provider quota
    /// or the ingest workers' time.
    pub embedding_tenant_concurrency: u32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            timeout: super::DEFAULT_TIMEOUT,
            embedding_batch_size: 64,
            embedding_max_retries: 6,
            embedding_max_backoff: Duration::from_secs(60),
            embedding_tenant_concurrency: 2,
        }
    }
}

fn number(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(raw) = lookup(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| ConfigError::Invalid {
            name,
            reason: format!(
                "'{raw}' is not a number from {} to {}",
                range.start(),
                range.end()
            ),
        })
}

impl LlmConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            timeout: Duration::from_secs(number(
                lookup,
                "LLM_TIMEOUT_SECONDS",
                d.timeout.as_secs(),
                1..=600,
            )?),
            embedding_batch_size: usize::try_from(number(
                lookup,
                "EMBEDDING_BATCH_SIZE",
                d.embedding_batch_size as u64,
                1..=2048,
            )?)
            .unwrap_or(d.embedding_batch_size),
            embedding_max_retries: u32::try_from(number(
                lookup,
                "EMBEDDING_MAX_RETRIES",
                u64::from(d.embedding_max_retries),
                0..=20,
            )?)
            .unwrap_or(d.embedding_max_retries),
            embedding_max_backoff: Duration::from_secs(number(
                lookup,
                "EMBEDDING_MAX_BACKOFF_SECONDS",
                d.embedding_max_backoff.as_secs(),
                1..=600,
            )?),
            embedding_tenant_concurrency: u32::try_from(number(
                lookup,
                "EMBEDDING_TENANT_CONCURRENCY",
                u64::from(d.embedding_tenant_concurrency),
                1..=1000,
            )?)
            .unwrap_or(d.embedding_tenant_concurrency),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let none = |_: &str| None;
        assert_eq!(
            LlmConfig::from_lookup(&none).ok(),
            Some(LlmConfig::default())
        );
        let bad = |n: &str| (n == "EMBEDDING_BATCH_SIZE").then(|| "0".to_owned());
        let err = LlmConfig::from_lookup(&bad).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("EMBEDDING_BATCH_SIZE")));
        let set = |n: &str| (n == "EMBEDDING_TENANT_CONCURRENCY").then(|| "5".to_owned());
        assert_eq!(
            LlmConfig::from_lookup(&set)
                .map(|c| c.embedding_tenant_concurrency)
                .ok(),
            Some(5)
        );
    }
}
