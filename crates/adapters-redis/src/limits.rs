//! Rate-limit token buckets in Redis, so every replica draws on the same bucket per caller.
//!
//! One Lua script refills and takes atomically, on Redis's own clock, so replicas whose clocks
//! differ still agree. While Redis cannot be reached, the limiter falls back to the bucket of
//! this process (the composition root supplies it): limits stay on, per replica.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{redis, Pool};
use domain::limit::Rate;
use ports::{Admission, RateLimiter};

/// How long a call may wait for Redis before the local bucket decides.
const TIMEOUT: Duration = Duration::from_millis(250);

const SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
";

/// Token buckets shared through Redis.
#[derive(Clone)]
pub struct RedisRateLimiter {
    pool: Pool,
    /// Key prefix of the buckets: `<namespace>:rate:`.
    prefix: String,
    fallback: Arc<dyn RateLimiter>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Shares the bus's connection pool; `fallback` decides while Redis is away.
    pub fn new(bus: &crate::RedisBus, fallback: Arc<dyn RateLimiter>) -> Self {
        Self {
            pool: bus.pool().clone(),
            prefix: format!("{}:rate:", bus.namespace()),
            fallback,
        }
    }

    async fn take(&self, key: &str, rate: Rate) -> Result<u64, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(format!("{}{key}", self.prefix))
            .arg(rate.per_second)
            .arg(rate.burst)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn admit(&self, key: &str, rate: Rate) -> Admission {
        match tokio::time::timeout(TIMEOUT, self.take(key, rate)).await {
            Ok(Ok(0)) => Admission::Allowed,
            Ok(Ok(wait_micros)) => Admission::Limited {
                retry_after: Duration::from_micros(wait_micros),
            },
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis rate limit unavailable; using the local bucket");
                self.fallback.admit(key, rate).await
            }
            Err(_) => self.fallback.admit(key, rate).await,
        }
    }
}
