//! Rate limits: a token bucket per caller, in process by default, or shared between replicas
//! when the composition root plugs in another [`RateLimiter`] (Redis).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::limit::{Bucket, Rate};
use domain::Principal;
use ports::{Admission, Clock, RateLimiter};

use crate::Platform;

/// Buckets remembered before idle full ones are first forgotten.
const SWEEP_AT: usize = 10_000;

/// Token buckets in this process's memory.
pub struct LocalRateLimiter {
    clock: Arc<dyn Clock>,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    /// Each bucket with the rate it fills at, so a sweep judges it by its own.
    by_key: HashMap<String, (Bucket, Rate)>,
    /// How many buckets trigger the next sweep: twice what survived the last one, so a flood
    /// of new callers costs a sweep per doubling, not one per request.
    sweep_at: usize,
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
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn admit(&self, key: &str, rate: Rate) -> Admission {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.by_key.len() >= buckets.sweep_at {
            // A full bucket is the same as no bucket: forget those.
            buckets.by_key.retain(|_, (b, r)| !b.refilled(*r, now));
            buckets.sweep_at = (buckets.by_key.len() * 2).max(SWEEP_AT);
        }
        let (bucket, _) = buckets
            .by_key
            .entry(key.to_owned())
            .or_insert_with(|| (Bucket::full(rate, now), rate));
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
enum Limited {
    /// Any API call, per credential.
    Request,
    /// Any API call without valid credentials, per address.
    Anonymous,
    /// Looking up a presented API key in the store, per address: ten times the anonymous rate,
    /// so many clients behind one address are not held back, but a flood of made-up keys
    /// cannot keep the store busy.
    Lookup,
    /// A sign-in attempt, per username and address.
    Login,
    /// Sign-in attempts per address for any username: ten times the sign-in rate, against one
    /// address guessing across many names. There is deliberately no limit per username from
    /// anywhere: it would let anyone lock a user out by failing on purpose.
    LoginAddress,
}

/// The address a request came from, as limits count it: the client's address (the TCP peer,
/// or what a trusted proxy forwarded; the HTTP layer decides which). An IPv6 address counts by
/// its /64, the block a single host or site is given, so one client cannot take a fresh bucket
/// per address.
pub fn address_key(peer: Option<std::net::IpAddr>) -> String {
    match peer {
        None => "unknown".to_owned(),
        Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Some(v4) => v4.to_string(),
    }
}

/// Who a caller is, for what is counted per caller (rate limits, WebSocket connections): an
/// API key by its ID, a token by its role and subject.
pub fn caller_key(principal: &Principal) -> String {
    match principal.api_key {
        Some(id) => format!("key:{id}"),
        None => format!("sub:{}:{}", principal.role, principal.subject),
    }
}

impl Platform {
    /// A request by `caller`, or, without valid credentials, from `address`: so a made-up or
    /// re-spelt credential never earns a bucket of its own.
    pub async fn admit_request(&self, caller: Option<&Principal>, address: &str) -> Admission {
        match caller {
            Some(caller) => self.admit(&caller_key(caller), Limited::Request).await,
            None => {
                self.admit(&format!("addr:{address}"), Limited::Anonymous)
                    .await
            }
        }
    }

    /// A store lookup of an API key presented from `address`.
    pub async fn admit_key_lookup(&self, address: &str) -> Admission {
        self.admit(&format!("lookup:{address}"), Limited::Lookup)
            .await
    }

    /// A sign-in attempt for `username` from `address`: strict per username and address, and
    /// looser per address for any username. Nothing is counted per username from anywhere, so
    /// failures elsewhere never refuse the real user at an address that has not been failing.
    pub async fn admit_login(&self, username: &str, address: &str) -> Admission {
        // Hashed: a username is chosen by the caller, a key is the limiter's.
        let user = &crate::hash_key(username).0[..32];
        for (key, limit) in [
            (format!("login:{user}:{address}"), Limited::Login),
            (format!("login-addr:{address}"), Limited::LoginAddress),
        ] {
            let admission = self.admit(&key, limit).await;
            if matches!(admission, Admission::Limited { .. }) {
                return admission;
            }
        }
        Admission::Allowed
    }

    /// Takes a token for `key` under the configured limit; always allowed when limits are off.
    async fn admit(&self, key: &str, kind: Limited) -> Admission {
        let tenfold = |r: Rate| Rate {
            per_second: r.per_second * 10.0,
            burst: r.burst.saturating_mul(10),
        };
        let rate = match kind {
            Limited::Request => self.settings.rate_limit,
            Limited::Anonymous => self.settings.anonymous_rate_limit,
            Limited::Lookup => self.settings.anonymous_rate_limit.map(tenfold),
            Limited::Login => self.settings.login_rate_limit,
            Limited::LoginAddress => self.settings.login_rate_limit.map(tenfold),
        };
        match rate {
            Some(rate) => self.deps.limiter.admit(key, rate).await,
            None => Admission::Allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::address_key;

    #[test]
    fn ipv6_peers_count_by_their_64_block() {
        let key = |s: &str| address_key(Some(s.parse().unwrap()));
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(key("10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key(None), "unknown");
    }
}
