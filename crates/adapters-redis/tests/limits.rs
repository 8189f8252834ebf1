//! The shared rate limiter against a real Redis (`TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`): two replicas draw on one bucket, and a Redis that cannot be
//! reached leaves the decision to the local bucket instead of letting everything through.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use adapters_redis::{RedisBus, RedisRateLimiter};
use async_trait::async_trait;
use domain::limit::Rate;
use ports::{Admission, EventBus, RateLimiter};

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Counts the calls it decides, and refuses them all.
#[derive(Default)]
struct Fallback(AtomicU32);

#[async_trait]
impl RateLimiter for Fallback {
    async fn admit(&self, _key: &str, _rate: Rate) -> Admission {
        self.0.fetch_add(1, Ordering::Relaxed);
        Admission::Limited {
            retry_after: std::time::Duration::from_secs(7),
        }
    }
}

#[tokio::test]
async fn two_replicas_share_one_bucket() {
    let url = redis_url();
    let bus = RedisBus::new(&url, "test-limits", log()).unwrap();
    assert!(
        bus.status().await.is_up(),
        "Redis is not reachable at {url}. These tests need it. Start it with:\n  \
         redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no"
    );
    let fallback = Arc::new(Fallback::default());
    let one = RedisRateLimiter::new(&bus, fallback.clone());
    let two = RedisRateLimiter::new(
        &RedisBus::new(&url, "test-limits", log()).unwrap(),
        fallback.clone(),
    );
    let rate = Rate {
        per_second: 0.5,
        burst: 4,
    };
    let key = format!("test:{}", uuid::Uuid::new_v4());
    let mut allowed = 0;
    for n in 0..10 {
        let limiter = if n % 2 == 0 { &one } else { &two };
        if limiter.admit(&key, rate).await == Admission::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "the burst is shared, not per replica");
    match one.admit(&key, rate).await {
        Admission::Limited { retry_after } => {
            assert!(retry_after.as_secs_f64() > 0.0 && retry_after.as_secs_f64() <= 2.0)
        }
        Admission::Allowed => panic!("the bucket is empty"),
    }
    assert_eq!(
        fallback.0.load(Ordering::Relaxed),
        0,
        "Redis decided every call"
    );
}

#[tokio::test]
async fn without_redis_the_local_bucket_decides() {
    // Nothing listens on port 1.
    let bus = RedisBus::new("redis://127.0.0.1:1", "test-limits", log()).unwrap();
    let fallback = Arc::new(Fallback::default());
    let limiter = RedisRateLimiter::new(&bus, fallback.clone());
    let rate = Rate {
        per_second: 1.0,
        burst: 1,
    };
    let decided = limiter.admit("test:unreachable", rate).await;
    assert_eq!(
        decided,
        Admission::Limited {
            retry_after: std::time::Duration::from_secs(7)
        }
    );
    assert_eq!(fallback.0.load(Ordering::Relaxed), 1);
}

/// A log for the bus to read: an empty embedded store.
fn log() -> std::sync::Arc<dyn ports::EventLog> {
    std::sync::Arc::new(adapters_memory::MemoryStore::new())
}
