//! Workflow requests and responses.

use chrono::{DateTime, Utc};
use domain::workflow::{ClaimInput, ExecutionInput, StepInput, StepRun, WorkflowInput};
use domain::{Execution, Workflow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::tasks::ClaimBody;
use crate::error::ApiError;

/// One step of `POST /workflows`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Unique within the workflow.
    pub name: String,
    /// `task` (the default): the step runs as a task.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Handed to the step's task in its metadata, as `step_parameters`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Steps that must end before this one starts. When no step names any, steps run one
    /// after another in the order given.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    pub priority: Option<i64>,
    #[serde(default)]
    pub resources: Map<String, Value>,
    #[serde(default)]
    pub resource_claims: Vec<ClaimBody>,
    pub max_attempts: Option<i64>,
    pub lease_seconds: Option<i64>,
    /// When the step fails after its retries, the steps after it still run (default false:
    /// the execution fails).
    pub continue_on_failure: Option<bool>,
}

/// `POST /workflows`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<StepRequest>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl CreateWorkflow {
    pub fn into_input(self) -> WorkflowInput {
        WorkflowInput {
            name: self.name,
            description: self.description,
            steps: self
                .steps
                .into_iter()
                .map(|s| StepInput {
                    name: s.name,
                    kind: s.kind,
                    parameters: s.parameters,
                    depends_on: s.depends_on,
                    required_capabilities: s.required_capabilities,
                    priority: s.priority,
                    resources: s.resources,
                    resource_claims: s
                        .resource_claims
                        .into_iter()
                        .map(|c| ClaimInput {
                            resource_id: c.resource_id,
                            amount: c.amount,
                        })
                        .collect(),
                    max_attempts: s.max_attempts,
                    lease_seconds: s.lease_seconds,
                    continue_on_failure: s.continue_on_failure,
                })
                .collect(),
            metadata: self.metadata,
        }
    }
}

/// A step as clients see it: every option with the value it takes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Map<String, Value>,
    pub depends_on: Vec<String>,
    pub required_capabilities: Vec<String>,
    pub priority: u8,
    /// As sent.
    pub resources: Map<String, Value>,
    pub resource_claims: Vec<ClaimBody>,
    pub max_attempts: u32,
    pub lease_seconds: u32,
    pub continue_on_failure: bool,
}

/// A workflow definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBody {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Always `created`: a definition does not change once stored.
    pub status: &'static str,
    pub steps: Vec<StepBody>,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

impl From<Workflow> for WorkflowBody {
    fn from(w: Workflow) -> Self {
        Self {
            id: w.id.as_uuid(),
            name: w.name,
            description: w.description,
            status: "created",
            steps: w
                .steps
                .iter()
                .map(|s| {
                    let input = s.to_input();
                    StepBody {
                        name: s.name.clone(),
                        kind: s.kind.as_str().to_owned(),
                        parameters: s.parameters.as_map().clone(),
                        depends_on: s.depends_on.clone(),
                        required_capabilities: s.task.required_capabilities.to_strings(),
                        priority: s.task.priority.get(),
                        resources: input.resources,
                        resource_claims: input
                            .resource_claims
                            .into_iter()
                            .map(|c| ClaimBody {
                                resource_id: c.resource_id,
                                amount: c.amount,
                            })
                            .collect(),
                        max_attempts: s.task.max_attempts,
                        lease_seconds: s.task.lease_seconds,
                        continue_on_failure: s.continue_on_failure,
                    }
                })
                .collect(),
            metadata: w.metadata.into_map(),
            created_at: w.created_at,
        }
    }
}

/// `POST /workflows/{id}/execute`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteWorkflow {
    /// Handed to every step's task in its metadata, as `execution_parameters`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// If given, must be the path's workflow ID.
    pub workflow_id: Option<Value>,
}

impl ExecuteWorkflow {
    pub fn into_input(self, path: Uuid) -> Result<ExecutionInput, ApiError> {
        if let Some(given) = self.workflow_id {
            if given.as_str().and_then(|s| s.parse::<Uuid>().ok()) != Some(path) {
                return Err(ApiError::validation(domain::ValidationErrors::single(
                    "workflow_id",
                    "must be the workflow ID in the path, or left out",
                )));
            }
        }
        Ok(ExecutionInput {
            parameters: self.parameters,
            metadata: self.metadata,
        })
    }
}

/// `POST /workflows/{id}/executions/{execution_id}/rerun`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunExecution {
    /// The step to run again; everything downstream of it runs again too.
    pub from_step: String,
}

/// One step of an execution.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRunBody {
    pub name: String,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The step's task, once it has one.
    pub task_id: Option<Uuid>,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<StepRun> for StepRunBody {
    fn from(s: StepRun) -> Self {
        Self {
            task_id: s.started_at.map(|_| s.task_id.as_uuid()),
            name: s.name,
            status: s.status.as_str().to_owned(),
            result: s.result,
            error: s.error,
            started_at: s.started_at,
            completed_at: s.completed_at,
        }
    }
}

/// A rerun, as an execution records it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    pub from_step: String,
    /// The steps it set to run again.
    pub steps: Vec<String>,
    pub at: DateTime<Utc>,
}

/// An execution.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionBody {
    pub execution_id: Uuid,
    pub workflow_id: Uuid,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub parameters: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub steps: Vec<StepRunBody>,
    pub reruns: Vec<RerunBody>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<Execution> for ExecutionBody {
    fn from(x: Execution) -> Self {
        Self {
            execution_id: x.id.as_uuid(),
            workflow_id: x.workflow_id.as_uuid(),
            status: x.status.as_str().to_owned(),
            parameters: x.parameters.into_map(),
            metadata: x.metadata.into_map(),
            steps: x.steps.into_iter().map(StepRunBody::from).collect(),
            reruns: x
                .reruns
                .into_iter()
                .map(|r| RerunBody {
                    from_step: r.from_step,
                    steps: r.steps,
                    at: r.at,
                })
                .collect(),
            created_at: x.created_at,
            completed_at: x.completed_at,
            updated_at: x.updated_at,
        }
    }
}

/// `GET /workflows` and `GET /workflows/{id}/executions` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListPage {
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
