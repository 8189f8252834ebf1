//! Agent requests and responses.

use chrono::{DateTime, Utc};
use domain::{Agent, AgentPatch, AgentStatus, HeartbeatStatus, Metadata, NewAgent};
use ports::AgentQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// `POST /agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub name: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub resources: Map<String, Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub max_concurrent_tasks: Option<u32>,
}

impl RegisterAgent {
    pub fn into_domain(self) -> Result<NewAgent, ApiError> {
        NewAgent::parse(
            &self.name,
            &self.capabilities,
            &self.resources,
            self.metadata,
            self.max_concurrent_tasks,
        )
        .map_err(ApiError::validation)
    }
}

/// `PATCH /agents/{id}`: every field optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    pub capabilities: Option<Vec<String>>,
    pub resources: Option<Map<String, Value>>,
    pub metadata: Option<Map<String, Value>>,
    pub max_concurrent_tasks: Option<u32>,
    pub status: Option<String>,
}

impl UpdateAgent {
    pub fn into_domain(self) -> Result<AgentPatch, ApiError> {
        AgentPatch::parse(
            self.capabilities.as_deref(),
            self.resources.as_ref(),
            self.metadata,
            self.max_concurrent_tasks,
            self.status.as_deref(),
        )
        .map_err(ApiError::validation)
    }
}

/// `POST /agents/{id}/heartbeat`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub status: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

impl Heartbeat {
    pub fn into_domain(self) -> Result<(Option<HeartbeatStatus>, Option<Metadata>), ApiError> {
        let mut errors = domain::ValidationErrors::default();
        let status = self
            .status
            .and_then(|s| errors.collect("status", s.parse::<HeartbeatStatus>()));
        let metadata = self
            .metadata
            .and_then(|m| errors.collect("metadata", Metadata::parse(m)));
        errors.into_result().map_err(ApiError::validation)?;
        Ok((status, metadata))
    }
}

/// `GET /agents` query parameters. Unknown ones are refused, so a typo is not a silent no-op.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAgents {
    pub status_filter: Option<String>,
    pub capability_filter: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListAgents {
    pub fn into_query(self) -> Result<(AgentQuery, domain::Limit), ApiError> {
        let (limit, after) = super::page_params(self.limit, self.cursor)?;
        let query = AgentQuery {
            status: self
                .status_filter
                .map(|s| s.parse::<AgentStatus>())
                .transpose()
                .map_err(|e| super::bad_param("status_filter", e))?,
            capability: super::capability_param(self.capability_filter)?,
            after,
            limit: 0,
        };
        Ok((query, limit))
    }
}

/// An agent as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentBody {
    pub id: uuid::Uuid,
    pub name: String,
    pub capabilities: Vec<String>,
    pub resources: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub status: &'static str,
    pub max_concurrent_tasks: u32,
    pub current_tasks: u32,
    pub reliability: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
}

impl From<Agent> for AgentBody {
    fn from(agent: Agent) -> Self {
        Self {
            id: agent.id.as_uuid(),
            name: agent.name,
            capabilities: agent.capabilities.to_strings(),
            resources: agent.resources.to_json(),
            metadata: agent.metadata.into_map(),
            status: agent.status.as_str(),
            max_concurrent_tasks: agent.max_concurrent_tasks,
            current_tasks: agent.current_tasks,
            reliability: agent.reliability,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
            last_heartbeat: agent.last_heartbeat,
        }
    }
}

/// The registration response: the agent and its one-time key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisteredBody {
    #[serde(flatten)]
    pub agent: AgentBody,
    /// Shown once: the platform keeps only its hash.
    pub agent_key: String,
}

/// The heartbeat response: the agent and the tasks it holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub agent: AgentBody,
    pub tasks: Vec<crate::dto::tasks::TaskBody>,
}

/// A plain confirmation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub message: &'static str,
}
