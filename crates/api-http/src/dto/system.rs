//! Responses of the service endpoints: root, health, probes.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// `GET /`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    pub message: &'static str,
    pub version: &'static str,
    pub docs: &'static str,
    pub health: &'static str,
}

/// `GET /api/v1/health`, in the seed's shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    pub status: &'static str,
    pub components: Components,
    pub metrics: HealthMetrics,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Components {
    pub platform: &'static str,
    pub database: &'static str,
    pub redis: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthMetrics {
    pub active_agents: u64,
    pub active_tasks: u64,
    pub active_connections: u64,
}

/// `GET /livez` and `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeBody {
    pub status: &'static str,
}
