//! API keys: what is stored of them (a hash, never the key) and when one may be used.

use chrono::{DateTime, Utc};

use crate::{AgentId, ApiKeyId, Role};

/// Every key the platform issues starts with this, so leaked keys are easy to spot.
pub const KEY_PREFIX: &str = "mapk_";
/// How many leading characters of a key are stored in clear, to tell keys apart.
pub const VISIBLE_PREFIX_CHARS: usize = 12;

/// SHA-256 of a key, hex-encoded: the only form in which a key is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub String);

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters, for display.
    pub prefix: String,
    pub hash: KeyHash,
    pub role: Role,
    /// Set for `agent` keys: the agent this key acts for.
    pub agent_id: Option<AgentId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A key authenticates only while it is neither revoked nor expired.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}
