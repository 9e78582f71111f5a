//! Embedding many texts for one tenant: batched, limited per tenant across
//! processes (Redis), and retried on 429 (honouring `Retry-After`), 5xx and
//! timeouts with bounded exponential backoff and jitter.

use std::time::Duration;

use rand::Rng;

use super::{LlmClient, LlmConfig, LlmError, TokenUsage};
use crate::ids::TenantId;
use crate::kv::Kv;

/// How long a slot is held at most when its holder dies mid-call.
const LEASE: Duration = Duration::from_secs(120);
/// How long to wait for a free slot before giving up (the job retries).
const MAX_SLOT_WAIT: Duration = Duration::from_secs(300);
/// First retry wait without `Retry-After`; doubles per retry.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// Frees expired leases, then takes one if fewer than the limit are held.
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A per-tenant slot for one embeddings request; release it with
/// [`TenantSlot::release`] (an abandoned one expires after [`LEASE`]).
pub struct TenantSlot {
    kv: Kv,
    key: String,
    token: String,
}

impl TenantSlot {
    /// Waits (polling with jitter) until the tenant has fewer than `limit`
    /// embeddings requests in flight.
    pub async fn acquire(kv: &Kv, tenant: &TenantId, limit: u32) -> Result<Self, LlmError> {
        let key = kv.key(&["llm", "embed-slots", tenant.as_str()]);
        let token = crate::crypto::random_token(12);
        let deadline = tokio::time::Instant::now() + MAX_SLOT_WAIT;
        let script = redis::Script::new(ACQUIRE);
        loop {
            let now = now_ms();
            let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(120_000);
            let mut conn = kv.conn();
            let got: i64 = script
                .key(&key)
                .arg(now)
                .arg(limit.max(1))
                .arg(now + lease_ms)
                .arg(&token)
                .arg(lease_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| LlmError::Network(format!("redis: {e}")))?;
            if got == 1 {
                return Ok(Self {
                    kv: kv.clone(),
                    key,
                    token,
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LlmError::RateLimited { retry_after: None });
            }
            let pause = rand::thread_rng().gen_range(50..200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    pub async fn release(self) {
        let mut conn = self.kv.conn();
        let result = redis::cmd("ZREM")
            .arg(&self.key)
            .arg(&self.token)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not release an embedding slot; it expires on its own");
        }
    }
}

/// The wait before retry number `retry` (from 1): the provider's
/// `Retry-After` when it gave one, else `0.5 s × 2^(retry-1)`; plus up to
/// 20% jitter so that throttled workers do not come back in step; never
/// more than `max`.
pub fn backoff(retry: u32, retry_after: Option<Duration>, max: Duration) -> Duration {
    let base = retry_after.unwrap_or_else(|| {
        BASE_BACKOFF.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1).min(16)))
    });
    let jitter = base.mul_f64(rand::thread_rng().gen_range(0.0..0.2));
    (base + jitter).min(max)
}

/// Everything embedded, in input order.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub usage: TokenUsage,
    pub model: String,
    /// Requests made, retries included.
    pub requests: u32,
}

/// Embeds `texts` in batches of `config.embedding_batch_size`, holding a
/// tenant slot per request. `progress(done)` is called after each batch.
pub async fn embed_all<F, Fut>(
    client: &LlmClient,
    kv: &Kv,
    tenant: &TenantId,
    config: &LlmConfig,
    texts: &[String],
    mut progress: F,
) -> Result<Embedded, LlmError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Embedded {
        vectors: Vec::with_capacity(texts.len()),
        usage: TokenUsage::default(),
        model: client.embedding_model().unwrap_or_default().to_owned(),
        requests: 0,
    };
    for batch in texts.chunks(config.embedding_batch_size.max(1)) {
        let mut retry = 0u32;
        let result = loop {
            let slot = TenantSlot::acquire(kv, tenant, config.embedding_tenant_concurrency).await?;
            out.requests += 1;
            let result = client.embed_with_usage(batch).await;
            slot.release().await;
            match result {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && retry < config.embedding_max_retries => {
                    retry += 1;
                    let retry_after = match &e {
                        LlmError::RateLimited { retry_after } => *retry_after,
                        _ => None,
                    };
                    let wait = backoff(retry, retry_after, config.embedding_max_backoff);
                    tracing::warn!(tenant_id = %tenant, retry, wait_ms = wait.as_millis() as u64, error = %e, "embedding batch failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        };
        out.usage.prompt_tokens = out
            .usage
            .prompt_tokens
            .saturating_add(result.usage.prompt_tokens);
        out.usage.total_tokens = out
            .usage
            .total_tokens
            .saturating_add(result.usage.total_tokens);
        out.model = result.model;
        out.vectors.extend(result.vectors);
        progress(out.vectors.len()).await;
    }
    if let Some(dim) = out.vectors.first().map(Vec::len)
        && out.vectors.iter().any(|v| v.len() != dim)
    {
        return Err(LlmError::Server(
            "the provider returned embeddings of different sizes".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_honours_retry_after_and_bounds() {
        let max = Duration::from_secs(60);
        let w = backoff(1, Some(Duration::from_secs(2)), max);
        assert!(w >= Duration::from_secs(2) && w <= Duration::from_millis(2400));
        let w = backoff(3, None, max);
        assert!(w >= Duration::from_secs(2) && w <= Duration::from_millis(2400));
        assert_eq!(backoff(30, None, max), max);
        assert_eq!(backoff(1, Some(Duration::from_secs(600)), max), max);
    }
}
