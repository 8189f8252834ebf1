//! Pagination: page sizes and opaque cursors over a stable newest-first order.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Rows per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// A page size in 1..=1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub fn new(value: Option<u32>) -> Result<Self, String> {
        match value.unwrap_or(DEFAULT_LIMIT) {
            0 => Err("must be at least 1".into()),
            v if v > MAX_LIMIT => Err(format!("must be at most {MAX_LIMIT}")),
            v => Ok(Self(v)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(DEFAULT_LIMIT)
    }
}

/// A position in a newest-first listing: the `(created_at, id)` of the last row seen.
/// Rows strictly after it (older, or equally old with a smaller ID) come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let bad = || "is not a cursor this server issued".to_string();
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Self { created_at, id })
    }

    /// True when a row at `(created_at, id)` comes after this cursor in newest-first order.
    pub fn precedes(&self, created_at: DateTime<Utc>, id: Uuid) -> bool {
        (created_at, id) < (self.created_at, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::from_u128(42),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("nope").is_err());
        assert!(Cursor::decode("12_zz").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(Limit::new(None).unwrap().get(), 100);
        assert!(Limit::new(Some(0)).is_err());
        assert!(Limit::new(Some(1001)).is_err());
    }
}
