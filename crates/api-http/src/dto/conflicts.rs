//! Conflict requests and responses.

use app::ResolveRequest;
use chrono::{DateTime, Utc};
use domain::conflict::Resolution;
use domain::{Conflict, ConflictReport, ConflictStatus, ConflictType, Severity, Strategy};
use ports::ConflictQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// `POST /conflicts`, as in the seed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportConflict {
    pub agent_id: Option<String>,
    pub task_id: Option<String>,
    pub conflict_type: String,
    pub description: String,
    pub severity: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl ReportConflict {
    pub fn into_domain(self) -> Result<ConflictReport, ApiError> {
        ConflictReport::parse(
            self.agent_id.as_deref(),
            self.task_id.as_deref(),
            &self.conflict_type,
            &self.description,
            &self.severity,
            self.metadata,
        )
        .map_err(ApiError::validation)
    }
}

/// `POST /conflicts/{id}/resolve`: every field optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveConflict {
    pub strategy: Option<String>,
    pub resolution: Option<String>,
    pub outcome: Option<String>,
}

impl ResolveConflict {
    pub fn into_request(self) -> Result<ResolveRequest, ApiError> {
        let mut errors = domain::ValidationErrors::default();
        let strategy = self
            .strategy
            .and_then(|s| errors.collect("strategy", s.parse::<Strategy>()));
        let resolution = self
            .resolution
            .and_then(|r| errors.collect("resolution", domain::conflict::check_text(&r)));
        let outcome = self
            .outcome
            .and_then(|o| errors.collect("outcome", domain::conflict::check_text(&o)));
        errors.into_result().map_err(ApiError::validation)?;
        Ok(ResolveRequest {
            strategy,
            resolution,
            outcome,
        })
    }
}

/// `POST /conflicts/{id}/dismiss`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissConflict {
    pub reason: String,
}

/// `GET /conflicts` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConflicts {
    pub status_filter: Option<String>,
    pub severity_filter: Option<String>,
    pub type_filter: Option<String>,
    pub agent_id: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListConflicts {
    pub fn into_query(self) -> Result<(ConflictQuery, domain::Limit), ApiError> {
        let (limit, after) = super::page_params(self.limit, self.cursor)?;
        let query = ConflictQuery {
            status: self
                .status_filter
                .map(|s| s.parse::<ConflictStatus>())
                .transpose()
                .map_err(|e| super::bad_param("status_filter", e))?,
            severity: self
                .severity_filter
                .map(|s| s.parse::<Severity>())
                .transpose()
                .map_err(|e| super::bad_param("severity_filter", e))?,
            conflict_type: self
                .type_filter
                .map(|s| s.parse::<ConflictType>())
                .transpose()
                .map_err(|e| super::bad_param("type_filter", e))?,
            agent: self
                .agent_id
                .map(|a| a.parse::<domain::AgentId>())
                .transpose()
                .map_err(|_| super::bad_param("agent_id", "must be a UUID"))?,
            after,
            limit: 0,
        };
        Ok((query, limit))
    }
}

/// How a conflict ended, as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolutionBody {
    pub strategy: Option<&'static str>,
    pub outcome: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub details: Value,
}

impl From<Resolution> for ResolutionBody {
    fn from(r: Resolution) -> Self {
        Self {
            strategy: r.strategy.map(Strategy::as_str),
            outcome: r.outcome,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            details: r.details,
        }
    }
}

/// A conflict as clients see it: the seed's fields and ours.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConflictBody {
    pub id: uuid::Uuid,
    pub agent_id: Option<uuid::Uuid>,
    pub task_id: Option<uuid::Uuid>,
    pub conflict_type: &'static str,
    pub description: String,
    pub severity: &'static str,
    pub metadata: Map<String, Value>,
    pub status: &'static str,
    pub source: &'static str,
    pub involved_agents: Vec<uuid::Uuid>,
    pub involved_tasks: Vec<uuid::Uuid>,
    pub resource_id: Option<uuid::Uuid>,
    pub resolution: Option<ResolutionBody>,
    pub reported_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<Conflict> for ConflictBody {
    fn from(c: Conflict) -> Self {
        Self {
            id: c.id.as_uuid(),
            agent_id: c.agent_id.map(|a| a.as_uuid()),
            task_id: c.task_id.map(|t| t.as_uuid()),
            conflict_type: c.conflict_type.as_str(),
            description: c.description,
            severity: c.severity.as_str(),
            metadata: c.metadata.into_map(),
            status: c.status.as_str(),
            source: c.source.as_str(),
            involved_agents: c.involved_agents.iter().map(|a| a.as_uuid()).collect(),
            involved_tasks: c.involved_tasks.iter().map(|t| t.as_uuid()).collect(),
            resource_id: c.resource_id.map(|r| r.as_uuid()),
            resolution: c.resolution.map(ResolutionBody::from),
            reported_by: c.reported_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
            resolved_at: c.resolved_at,
        }
    }
}
