//! Token buckets: how many requests a caller may make, refilled at a steady rate.

use chrono::{DateTime, Duration, Utc};

/// A rate: `per_second` tokens refill a bucket holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// One caller's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: DateTime<Utc>,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: DateTime<Utc>) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Takes a token if there is one; otherwise says how long until there is.
    pub fn take(&mut self, rate: Rate, now: DateTime<Utc>) -> Result<(), Duration> {
        let elapsed = (now - self.updated)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0) as f64;
        self.tokens = (self.tokens + elapsed / 1e6 * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.per_second.max(f64::MIN_POSITIVE);
            Err(Duration::microseconds((wait * 1e6).ceil() as i64))
        }
    }

    /// Whether the bucket would be full again by `now` (and so need not be remembered).
    pub fn refilled(&self, rate: Rate, now: DateTime<Utc>) -> bool {
        let elapsed = (now - self.updated).num_milliseconds().max(0) as f64 / 1000.0;
        self.tokens + elapsed * rate.per_second >= f64::from(rate.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let mut bucket = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert!(bucket.take(rate, t0).is_ok());
        }
        let wait = bucket.take(rate, t0).unwrap_err();
        assert_eq!(wait, Duration::milliseconds(500));
        assert!(bucket.take(rate, t0 + Duration::milliseconds(499)).is_err());
        assert!(bucket.take(rate, t0 + Duration::milliseconds(1000)).is_ok());
        assert!(bucket.refilled(rate, t0 + Duration::seconds(10)));
    }
}
