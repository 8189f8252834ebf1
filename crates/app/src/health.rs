//! The platform's own view of its health, for `/api/v1/health` and `/readyz`.

use chrono::{DateTime, Utc};
use ports::ComponentStatus;

use crate::Platform;

/// What the health endpoint reports.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub platform: ComponentStatus,
    pub database: ComponentStatus,
    pub redis: ComponentStatus,
    /// Online agents.
    pub active_agents: u64,
    /// Tasks held by agents right now.
    pub active_tasks: u64,
    pub timestamp: DateTime<Utc>,
}

impl HealthReport {
    /// Healthy when every component is up.
    pub fn is_healthy(&self) -> bool {
        self.platform.is_up() && self.database.is_up() && self.redis.is_up()
    }
}

impl Platform {
    /// Whether the store answers: readiness, which must not wait on anything else.
    pub async fn store_status(&self) -> ComponentStatus {
        self.deps.store_health.status().await
    }

    /// Checks the store and the bus now and reads the fleet counters.
    pub async fn health(&self) -> HealthReport {
        let (database, redis) =
            tokio::join!(self.deps.store_health.status(), self.deps.bus.status());
        let counts = if database.is_up() {
            self.deps.agents.count_by_status().await.ok()
        } else {
            None
        };
        HealthReport {
            platform: ComponentStatus::Healthy,
            database,
            redis,
            active_agents: counts.map_or(0, |c| c.online()),
            active_tasks: counts.map_or(0, |c| c.running_tasks),
            timestamp: self.deps.clock.now(),
        }
    }
}
