//! Resource pool requests and responses.

use app::{ResourceFilter, ResourceView};
use chrono::{DateTime, Utc};
use domain::{Allocation, NewResource, ResourcePatch, ResourceStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// `POST /resources`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterResource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub capacity: Map<String, Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl RegisterResource {
    pub fn into_domain(self) -> Result<NewResource, ApiError> {
        NewResource::parse(&self.name, &self.kind, &self.capacity, self.metadata)
            .map_err(ApiError::validation)
    }
}

/// `PATCH /resources/{id}`: every field optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    pub capacity: Option<Map<String, Value>>,
    pub metadata: Option<Map<String, Value>>,
    pub status: Option<String>,
}

impl UpdateResource {
    pub fn into_domain(self) -> Result<ResourcePatch, ApiError> {
        ResourcePatch::parse(
            self.capacity.as_ref(),
            self.metadata,
            self.status.as_deref(),
        )
        .map_err(ApiError::validation)
    }
}

/// `GET /resources` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListResources {
    pub type_filter: Option<String>,
    pub status_filter: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListResources {
    pub fn into_filter(self) -> Result<(ResourceFilter, domain::Limit), ApiError> {
        let (limit, after) = super::page_params(self.limit, self.cursor)?;
        let filter = ResourceFilter {
            kind: self.type_filter,
            status: self
                .status_filter
                .map(|s| s.parse::<ResourceStatus>())
                .transpose()
                .map_err(|e| super::bad_param("status_filter", e))?,
            after,
        };
        Ok((filter, limit))
    }
}

/// A pool as clients see it: capacity as registered, `allocated` and `available` as numbers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceBody {
    pub id: uuid::Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub capacity: Map<String, Value>,
    pub allocated: Map<String, Value>,
    pub available: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ResourceView> for ResourceBody {
    fn from(view: ResourceView) -> Self {
        let pool = view.resource;
        // Every dimension of the capacity appears in both, zero when nothing is held.
        let allocated = pool
            .capacity
            .iter()
            .map(|(dim, _)| {
                (
                    dim.to_owned(),
                    domain::quantity::nanos_to_json(view.allocated.get(dim)),
                )
            })
            .collect();
        Self {
            id: pool.id.as_uuid(),
            name: pool.name,
            kind: pool.kind,
            capacity: pool.capacity.to_json(),
            allocated,
            available: view.available.to_json(),
            metadata: pool.metadata.into_map(),
            status: view.status.as_str(),
            created_at: pool.created_at,
            updated_at: pool.updated_at,
        }
    }
}

/// One task's hold on a pool.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationBody {
    pub task_id: uuid::Uuid,
    pub agent_id: Option<uuid::Uuid>,
    pub attempt: u32,
    pub amount: Map<String, Value>,
    pub allocated_at: Option<DateTime<Utc>>,
}

impl From<Allocation> for AllocationBody {
    fn from(a: Allocation) -> Self {
        Self {
            task_id: a.task.as_uuid(),
            agent_id: a.agent.map(|a| a.as_uuid()),
            attempt: a.attempt,
            amount: a.amount.to_json(),
            allocated_at: a.allocated_at,
        }
    }
}
