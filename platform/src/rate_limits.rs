//! Request rate limits shared by every api replica: GCRA (the generic cell
//! rate algorithm) over several buckets at once, in one Lua script, so one
//! request costs one Redis round trip and replicas never over-admit.
//!
//! A bucket of `limit` requests per `period` admits a burst of `limit` and
//! then one request every `period / limit`. Its whole state is one number,
//! the theoretical arrival time (TAT), stored with an expiry. A request is
//! admitted only when every bucket it touches admits it; a refused request
//! consumes nothing.
//!
//! The login limits in [`crate::auth::rate_limit`] stay fixed windows: they
//! count failures, not requests.

use std::collections::HashMap;

use crate::config::ConfigError;
use crate::kv::Kv;

/// `KEYS`: the buckets. `ARGV`: per bucket its limit and period (ms).
/// Returns `{admitted, retry_after_ms, (remaining, reset_ms) per bucket}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local tats = {}
local limited = false
local retry = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local interval = math.max(1, math.floor(period / limit))
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat + interval - interval * limit
  if allow_at > now then
    limited = true
    if allow_at - now > retry then retry = allow_at - now end
  end
end
local out = { limited and 0 or 1, retry }
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local interval = math.max(1, math.floor(period / limit))
  local tat = tats[i]
  if not limited then
    tat = tat + interval
    redis.call('SET', KEYS[i], tat, 'PX', math.max(1, tat - now))
  end
  local remaining = math.floor((now + interval * limit - tat) / interval)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
end
return out
";

/// One bucket a request is counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Unique name, e.g. `key:<id>` or `user:<id>:route:POST documents/upload`.
    pub name: String,
    pub limit: u32,
    pub period_ms: u64,
}

impl Bucket {
    pub fn per_hour(name: String, limit: u32) -> Self {
        Self {
            name,
            limit: limit.max(1),
            period_ms: 3_600_000,
        }
    }
    pub fn per_minute(name: String, limit: u32) -> Self {
        Self {
            name,
            limit: limit.max(1),
            period_ms: 60_000,
        }
    }
}

/// What the request's tightest bucket says (for the `X-RateLimit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// Seconds until the request would be admitted (when refused).
    pub retry_after_secs: u64,
    pub limit: u32,
    pub remaining: u64,
    /// Seconds until the tightest bucket is full again.
    pub reset_secs: u64,
}

fn secs_ceil(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// Hashed once: every authenticated request runs it.
static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GCRA));

/// Counts one request in every bucket, or in none when any is exhausted.
pub async fn admit(kv: &Kv, buckets: &[Bucket]) -> redis::RedisResult<Verdict> {
    if buckets.is_empty() {
        return Ok(Verdict {
            admitted: true,
            retry_after_secs: 0,
            limit: 0,
            remaining: 0,
            reset_secs: 0,
        });
    }
    let mut invocation = SCRIPT.prepare_invoke();
    for b in buckets {
        invocation
            .key(kv.key(&["ratelimit", "gcra", &b.name]))
            .arg(b.limit)
            .arg(b.period_ms);
    }
    let mut conn = kv.conn();
    let out: Vec<i64> = invocation.invoke_async(&mut conn).await?;
    let admitted = out.first().copied() == Some(1);
    let retry_ms = out.get(1).copied().unwrap_or(0);
    // The tightest bucket: fewest requests left, then the longest reset.
    let mut tightest: Option<(usize, i64, i64)> = None;
    for (i, pair) in out.get(2..).unwrap_or_default().chunks(2).enumerate() {
        let (remaining, reset) = (
            pair.first().copied().unwrap_or(0),
            pair.get(1).copied().unwrap_or(0),
        );
        let better = match tightest {
            None => true,
            Some((_, r, s)) => remaining < r || (remaining == r && reset > s),
        };
        if better {
            tightest = Some((i, remaining, reset));
        }
    }
    let (index, remaining, reset) = tightest.unwrap_or((0, 0, 0));
    Ok(Verdict {
        admitted,
        retry_after_secs: if admitted {
            0
        } else {
            secs_ceil(retry_ms).max(1)
        },
        limit: buckets.get(index).map_or(0, |b| b.limit),
        remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
        reset_secs: secs_ceil(reset),
    })
}

/// The configured limits (`RATE_LIMIT_*`, see `.env.example`).
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Requests per minute of one signed-in user (`RATE_LIMIT_USER_PER_MINUTE`).
    pub user_per_minute: u32,
    /// Requests per minute of one tenant, by plan id
    /// (`RATE_LIMIT_TENANT_PER_MINUTE`: `free=1200,pro=6000` or one number).
    pub tenant_per_minute: HashMap<String, u32>,
    /// For plans not listed.
    pub tenant_default_per_minute: u32,
    /// Requests per minute of one caller on each expensive route (uploads,
    /// agent tests and training, exports, searches):
    /// `RATE_LIMIT_EXPENSIVE_PER_MINUTE`.
    pub expensive_per_minute: u32,
    /// The most requests per hour an API key may be given
    /// (`API_KEY_MAX_RATE_LIMIT`); keys without `rateLimit` get
    /// `API_KEY_DEFAULT_RATE_LIMIT`.
    pub key_max_per_hour: u32,
    pub key_default_per_hour: u32,
}

impl RateLimits {
    pub fn tenant_limit(&self, plan: &str) -> u32 {
        self.tenant_per_minute
            .get(plan)
            .copied()
            .unwrap_or(self.tenant_default_per_minute)
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        name,
                        reason: format!("'{raw}' is not a positive whole number"),
                    }),
                },
            }
        };
        let mut tenant_per_minute = HashMap::from([
            ("free".to_owned(), 1_200),
            ("pro".to_owned(), 6_000),
            ("enterprise".to_owned(), 60_000),
        ]);
        let mut tenant_default_per_minute = 1_200;
        if let Some(raw) = get("RATE_LIMIT_TENANT_PER_MINUTE") {
            let invalid = |reason: String| ConfigError::Invalid {
                name: "RATE_LIMIT_TENANT_PER_MINUTE",
                reason,
            };
            if let Ok(n) = raw.trim().parse::<u32>() {
                if n == 0 {
                    return Err(invalid("must be positive".to_owned()));
                }
                tenant_per_minute.clear();
                tenant_default_per_minute = n;
            } else {
                for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (plan, n) = pair
                        .split_once('=')
                        .ok_or_else(|| invalid(format!("'{pair}' is not plan=number")))?;
                    let n = n
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(format!("'{pair}' is not plan=number")))?;
                    tenant_per_minute.insert(plan.trim().to_owned(), n);
                }
            }
        }
        let key_max_per_hour = number("API_KEY_MAX_RATE_LIMIT", 100_000)?;
        let key_default_per_hour = number("API_KEY_DEFAULT_RATE_LIMIT", 1_000)?;
        if key_default_per_hour > key_max_per_hour {
            return Err(ConfigError::Invalid {
                name: "API_KEY_DEFAULT_RATE_LIMIT",
                reason: "must not exceed API_KEY_MAX_RATE_LIMIT".to_owned(),
            });
        }
        Ok(Self {
            user_per_minute: number("RATE_LIMIT_USER_PER_MINUTE", 1_200)?,
            tenant_per_minute,
            tenant_default_per_minute,
            expensive_per_minute: number("RATE_LIMIT_EXPENSIVE_PER_MINUTE", 60)?,
            key_max_per_hour,
            key_default_per_hour,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<RateLimits, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RateLimits::from_lookup(&|n| map.get(n).cloned())
    }

    #[test]
    fn tenant_limits_by_plan_or_one_number() -> Result<(), ConfigError> {
        let l = parse(&[("RATE_LIMIT_TENANT_PER_MINUTE", "free=10, pro=20")])?;
        assert_eq!(l.tenant_limit("free"), 10);
        assert_eq!(l.tenant_limit("pro"), 20);
        assert_eq!(l.tenant_limit("enterprise"), 60_000);
        assert_eq!(l.tenant_limit("unknown"), 1_200);
        let l = parse(&[("RATE_LIMIT_TENANT_PER_MINUTE", "77")])?;
        assert_eq!(l.tenant_limit("pro"), 77);
        assert!(parse(&[("RATE_LIMIT_TENANT_PER_MINUTE", "free=x")]).is_err());
        assert!(parse(&[("RATE_LIMIT_USER_PER_MINUTE", "0")]).is_err());
        assert!(
            parse(&[
                ("API_KEY_MAX_RATE_LIMIT", "10"),
                ("API_KEY_DEFAULT_RATE_LIMIT", "20")
            ])
            .is_err()
        );
        Ok(())
    }
}
