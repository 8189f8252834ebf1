//! A clock tests move by hand and IDs that are predictable yet time-ordered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// A clock that stands still until told to move. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::at(DateTime::from_timestamp(1_767_225_600, 0).expect("valid start time"))
    }
}

impl ManualClock {
    pub fn at(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = to;
    }
}

impl ports::Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// IDs that increase with every call, and secrets that are distinct per call.
/// Not random: for tests only.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl SequentialIds {
    /// IDs counting on from `n`: generators started far apart never give the same ID, as
    /// replicas' random generators never do.
    pub fn after(n: u64) -> Self {
        Self(AtomicU64::new(n))
    }
}

impl ports::IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        // A version-7 layout with the counter in the timestamp bits keeps IDs time-ordered.
        Uuid::from_u128((u128::from(n) << 80) | (0x7 << 76) | (0b10 << 62))
    }

    fn secret_bytes(&self) -> [u8; 32] {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        bytes[8..16].copy_from_slice(&(n ^ 0xA5A5_A5A5_A5A5_A5A5).to_be_bytes());
        bytes
    }
}
