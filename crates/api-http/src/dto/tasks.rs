//! Task requests and responses.

use chrono::{DateTime, Utc};
use domain::{Event, Priority, Task, TaskInput, TaskStatus};
use ports::TaskQuery;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::ApiError;

/// Longest progress message an agent may send.
const MAX_MESSAGE_CHARS: usize = 1000;

/// One resource claim of a submission.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The pool's ID or name.
    pub resource_id: String,
    pub amount: Map<String, Value>,
}

/// `POST /tasks`. Serializable again, to fingerprint it for `Idempotency-Key`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    pub title: String,
    pub description: Option<String>,
    pub priority: Option<i64>,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub resources: Map<String, Value>,
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub max_attempts: Option<i64>,
    pub lease_seconds: Option<i64>,
    #[serde(default)]
    pub resource_claims: Vec<ClaimBody>,
    pub preemptible: Option<bool>,
}

/// `POST /tasks/batch`. Serializable again, to fingerprint it for `Idempotency-Key`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub tasks: Vec<SubmitTask>,
}

/// The tasks a batch stored, in the order it gave them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub tasks: Vec<TaskBody>,
}

impl SubmitTask {
    /// The submission as the domain takes it; the platform validates it.
    pub fn into_input(self) -> TaskInput {
        TaskInput {
            title: self.title,
            description: self.description,
            priority: self.priority,
            required_capabilities: self.required_capabilities,
            resources: self.resources,
            deadline: self.deadline,
            metadata: self.metadata,
            max_attempts: self.max_attempts,
            lease_seconds: self.lease_seconds,
            resource_claims: self
                .resource_claims
                .into_iter()
                .map(|c| (c.resource_id, c.amount))
                .collect(),
            preemptible: self.preemptible,
        }
    }
}

/// `POST /tasks/{id}/start`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    pub attempt: u32,
}

/// `POST /tasks/{id}/heartbeat`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskHeartbeat {
    pub attempt: u32,
    pub progress: Option<f64>,
    pub message: Option<String>,
}

impl TaskHeartbeat {
    pub fn checked_message(&self) -> Result<Option<String>, ApiError> {
        match &self.message {
            Some(m) if m.chars().count() > MAX_MESSAGE_CHARS => {
                Err(ApiError::validation(domain::ValidationErrors::single(
                    "message",
                    format!("must be at most {MAX_MESSAGE_CHARS} characters"),
                )))
            }
            other => Ok(other.clone()),
        }
    }
}

/// `POST /agents/{id}/reports`: what the per-task calls say, for several tasks at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitReports {
    pub reports: Vec<ReportBody>,
}

/// One report: the task, the call it stands for (`action`), and that call's body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub task_id: Uuid,
    pub action: String,
    pub attempt: u32,
    pub progress: Option<f64>,
    pub message: Option<String>,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub retryable: Option<bool>,
}

impl SubmitReports {
    /// The reports as the platform takes them; every field that does not belong to its
    /// action, or is missing from it, is named (`reports[2].error`).
    pub fn into_reports(self) -> Result<Vec<app::Report>, ApiError> {
        use app::ReportKind;
        let mut errors = domain::ValidationErrors::default();
        let mut reports = Vec::with_capacity(self.reports.len());
        for (i, r) in self.reports.into_iter().enumerate() {
            let field = |name: &str| format!("reports[{i}].{name}");
            let allowed: &[&str] = match r.action.as_str() {
                "start" => &[],
                "heartbeat" => &["progress", "message"],
                "complete" => &["result"],
                "fail" => &["error", "retryable"],
                _ => {
                    errors.push(
                        field("action"),
                        "must be start, heartbeat, complete or fail",
                    );
                    continue;
                }
            };
            let given = [
                ("progress", r.progress.is_some()),
                ("message", r.message.is_some()),
                ("result", r.result.is_some()),
                ("error", r.error.is_some()),
                ("retryable", r.retryable.is_some()),
            ];
            for (name, _) in given.iter().filter(|(n, set)| *set && !allowed.contains(n)) {
                errors.push(
                    field(name),
                    format!("does not belong to action {}", r.action),
                );
            }
            if r.message
                .as_ref()
                .is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS)
            {
                errors.push(
                    field("message"),
                    format!("must be at most {MAX_MESSAGE_CHARS} characters"),
                );
            }
            let kind = match r.action.as_str() {
                "start" => ReportKind::Start,
                "heartbeat" => ReportKind::Heartbeat {
                    progress: r.progress,
                    message: r.message,
                },
                "complete" => ReportKind::Complete {
                    result: r.result.unwrap_or_default(),
                },
                _ => match r.error {
                    Some(error) => ReportKind::Fail {
                        error,
                        retryable: r.retryable.unwrap_or(true),
                    },
                    None => {
                        errors.push(field("error"), "is required for action fail");
                        continue;
                    }
                },
            };
            reports.push(app::Report {
                task: domain::TaskId(r.task_id),
                attempt: r.attempt,
                kind,
            });
        }
        errors
            .into_result()
            .map(|()| reports)
            .map_err(ApiError::validation)
    }
}

/// The answer to each report, in order: the task as it is now, or the problem that refused
/// the report, with the status its per-task call would have answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportsBody {
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportResult {
    pub task_id: Uuid,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// `POST /tasks/{id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    pub attempt: u32,
    #[serde(default)]
    pub result: Map<String, Value>,
}

/// `POST /tasks/{id}/fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    pub attempt: u32,
    pub error: String,
    pub retryable: Option<bool>,
}

/// `GET /tasks` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    pub status_filter: Option<String>,
    pub priority_filter: Option<i64>,
    pub capability_filter: Option<String>,
    pub agent_id: Option<Uuid>,
    pub workflow_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

use super::bad_param as bad;

impl ListTasks {
    pub fn into_query(self) -> Result<(TaskQuery, domain::Limit), ApiError> {
        let (limit, after) = super::page_params(self.limit, self.cursor)?;
        let query = TaskQuery {
            status: self
                .status_filter
                .map(|s| s.parse::<TaskStatus>())
                .transpose()
                .map_err(|e| bad("status_filter", e))?,
            priority: self
                .priority_filter
                .map(Priority::new)
                .transpose()
                .map_err(|e| bad("priority_filter", e))?,
            capability: super::capability_param(self.capability_filter)?,
            agent: self.agent_id.map(domain::AgentId),
            workflow_id: self.workflow_id,
            execution_id: self.execution_id,
            after,
            limit: 0,
        };
        Ok((query, limit))
    }
}

/// `GET /agents/{id}/tasks` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AgentTasks {
    pub status_filter: Option<String>,
    pub wait_seconds: Option<u32>,
}

impl AgentTasks {
    pub fn parse(self) -> Result<(Option<TaskStatus>, Option<std::time::Duration>), ApiError> {
        let status = self
            .status_filter
            .map(|s| s.parse::<TaskStatus>())
            .transpose()
            .map_err(|e| bad("status_filter", e))?;
        let wait = match self.wait_seconds {
            Some(w) if w > app::MAX_WAIT_SECONDS => {
                return Err(bad(
                    "wait_seconds",
                    format!("must be at most {}", app::MAX_WAIT_SECONDS),
                ))
            }
            w => w.map(|w| std::time::Duration::from_secs(u64::from(w))),
        };
        Ok((status, wait))
    }
}

/// A task as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub priority: u8,
    pub required_capabilities: Vec<String>,
    pub resources: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub status: &'static str,
    pub assigned_agent: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_seconds: u32,
    pub preemptible: bool,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub progress: Option<f64>,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub resource_claims: Vec<Value>,
    pub workflow_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    pub step: Option<String>,
    pub pending_reason: Option<String>,
    pub cancel_requested: bool,
    pub updated_at: DateTime<Utc>,
}

impl From<Task> for TaskBody {
    fn from(t: Task) -> Self {
        Self {
            id: t.id.as_uuid(),
            title: t.title,
            description: t.description,
            priority: t.priority.get(),
            required_capabilities: t.required_capabilities.to_strings(),
            resources: t.resources.to_json(),
            metadata: t.metadata.into_map(),
            status: t.status.as_str(),
            assigned_agent: t.assigned_agent.map(|a| a.as_uuid()),
            created_at: t.created_at,
            deadline: t.deadline,
            completed_at: t.completed_at,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            lease_seconds: t.lease_seconds,
            preemptible: t.preemptible,
            lease_expires_at: t.lease_expires_at,
            assigned_at: t.assigned_at,
            started_at: t.started_at,
            progress: t.progress,
            result: t.result,
            error: t.error,
            resource_claims: t
                .resource_claims
                .iter()
                .map(|c| json!({"resource_id": c.resource, "amount": c.amount.to_json()}))
                .collect(),
            workflow_id: t.workflow_id,
            execution_id: t.execution_id,
            step: t.step,
            pending_reason: t.pending_reason.map(|r| r.to_string()),
            cancel_requested: t.cancel_requested,
            updated_at: t.updated_at,
        }
    }
}

/// The reply to a task heartbeat.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskHeartbeatBody {
    /// Whether an operator asked for the task to stop.
    pub cancel_requested: bool,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub task: TaskBody,
}

/// One entry of a task's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: &'static str,
    pub data: Value,
    pub timestamp: DateTime<Utc>,
    pub seq: i64,
}

impl From<Event> for EventBody {
    fn from(e: Event) -> Self {
        Self {
            kind: e.kind.as_str(),
            channel: e.channel().as_str(),
            data: std::sync::Arc::unwrap_or_clone(e.data),
            timestamp: e.timestamp,
            seq: e.seq,
        }
    }
}
