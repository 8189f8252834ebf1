//! Time, identity and health: the small ports every use case leans on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The source of "now". Tests use a clock they move by hand, so nothing sleeps.
pub trait Clock: Send + Sync {
    /// The current time, truncated to whole microseconds (what every store keeps).
    fn now(&self) -> DateTime<Utc>;
}

/// The source of identifiers and secrets.
pub trait IdGenerator: Send + Sync {
    /// A new unique ID.
    fn new_id(&self) -> Uuid;
    /// 32 bytes from a cryptographically secure generator, for credentials.
    fn secret_bytes(&self) -> [u8; 32];
}

domain::named_enum!(
    /// The health of one component, as `/api/v1/health` reports it.
    ComponentStatus, "component status" {
        Healthy => "healthy",
        Unhealthy => "unhealthy",
        /// The in-process default stands in for the component.
        Embedded => "embedded",
    }
);

impl ComponentStatus {
    /// True unless the component is down.
    pub fn is_up(self) -> bool {
        self != ComponentStatus::Unhealthy
    }
}

/// A component that can say whether it works.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Checks the component now, within a short timeout.
    async fn status(&self) -> ComponentStatus;
}

/// Whether a request may go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; a token is back after this long.
    Limited {
        retry_after: std::time::Duration,
    },
}

/// Per-caller token buckets, shared by every replica the limiter reaches.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes a token from the bucket named `key`, filled at `rate`.
    async fn admit(&self, key: &str, rate: domain::limit::Rate) -> Admission;
}

/// What one replica announces of the settings every replica of a deployment must share, each as
/// a fingerprint (never the value: some are secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// The replica, named by an ID it draws when it starts.
    pub replica: Uuid,
    /// Setting name to fingerprint.
    pub settings: std::collections::BTreeMap<String, String>,
    /// When it last announced them.
    pub seen_at: DateTime<Utc>,
}

/// Where the replicas sharing a store announce their settings, so that each can tell when
/// another was started with different ones (a different `JWT_SECRET` makes every token one
/// replica issues fail on the other).
#[async_trait]
pub trait ReplicaRegistry: Send + Sync {
    /// Records `mine` in place of its earlier announcement, forgets announcements older than
    /// `forget_before`, and returns the other replicas' announcements made at or after `since`.
    async fn announce(
        &self,
        mine: &ReplicaSettings,
        since: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<Vec<ReplicaSettings>, crate::RepoError>;
}
