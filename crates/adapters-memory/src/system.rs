//! The real clock and the real random source.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::RngCore;
use uuid::Uuid;

/// Wall-clock time, truncated to microseconds so values round-trip through every store.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ports::Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.duration_trunc(TimeDelta::microseconds(1))
            .unwrap_or(now)
    }
}

/// Time-ordered UUIDv7 IDs and OS-seeded secrets.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl ports::IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }

    fn secret_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        bytes
    }
}
