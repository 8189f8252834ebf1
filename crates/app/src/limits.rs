//! Rate limits: a token bucket per caller, in process by default, or shared between replicas
//! when the composition root plugs in another [`RateLimiter`] (Redis).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::limit::{Bucket, Rate};
use ports::{Admission, Clock, RateLimiter};

use crate::Platform;

/// Buckets remembered before idle full ones are forgotten.
const SWEEP_AT: usize = 10_000;

/// Token buckets in this process's memory.
pub struct LocalRateLimiter {
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimiter").finish_non_exhaustive()
    }
}

impl LocalRateLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn admit(&self, key: &str, rate: Rate) -> Admission {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT {
            // A full bucket is the same as no bucket: forget those.
            buckets.retain(|_, b| !b.refilled(rate, now));
        }
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(rate, now));
        match bucket.take(rate, now) {
            Ok(()) => Admission::Allowed,
            Err(wait) => Admission::Limited {
                retry_after: wait.to_std().unwrap_or_default(),
            },
        }
    }
}

/// Which limit a request falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Any API call, per credential (or per address without one).
    Request,
    /// A sign-in attempt, per address and per username.
    Login,
}

impl Platform {
    /// Takes a token for `key` under the configured limit; always allowed when limits are off.
    pub async fn admit(&self, key: &str, kind: Limited) -> Admission {
        let rate = match kind {
            Limited::Request => self.settings.rate_limit,
            Limited::Login => self.settings.login_rate_limit,
        };
        match rate {
            Some(rate) => self.deps.limiter.admit(key, rate).await,
            None => Admission::Allowed,
        }
    }
}
