//! Platform events: what changed, on which channel, about whom.
//!
//! An event is created together with the state change it describes and stored in the same
//! transaction; the store gives it its platform-wide `seq`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use serde_json::json;

use crate::task::Outcome;
use crate::{AgentId, Task, TaskId};

named_enum!(
    /// The channels a subscriber can choose from.
    Channel, "channel" {
            AgentActivity => "agent_activity",
            TaskActivity => "task_activity",
            ConflictAlerts => "conflict_alerts",
            ResourceActivity => "resource_activity",
            WorkflowActivity => "workflow_activity",
            SystemMetrics => "system_metrics",
    }
);

named_enum!(
    /// What happened. Each kind belongs to exactly one channel.
    EventKind, "event type" {
            AgentRegistered => "agent_registered",
            AgentDeregistered => "agent_deregistered",
            AgentStatusChanged => "agent_status_changed",
            AgentUpdated => "agent_updated",
            TaskSubmitted => "task_submitted",
            TaskAssigned => "task_assigned",
            TaskStarted => "task_started",
            TaskProgress => "task_progress",
            TaskCompleted => "task_completed",
            TaskFailed => "task_failed",
            TaskRetrying => "task_retrying",
            TaskCancelled => "task_cancelled",
            TaskExpired => "task_expired",
            ResourceRegistered => "resource_registered",
            ResourceUpdated => "resource_updated",
            ResourceDeleted => "resource_deleted",
            ResourceAllocated => "resource_allocated",
            ResourceReleased => "resource_released",
            ConflictReported => "conflict_reported",
            ConflictDetected => "conflict_detected",
            ConflictUpdated => "conflict_updated",
            ConflictResolved => "conflict_resolved",
            ConflictDismissed => "conflict_dismissed",
            WorkflowCreated => "workflow_created",
            WorkflowDeleted => "workflow_deleted",
            ExecutionStarted => "execution_started",
            ExecutionCompleted => "execution_completed",
            ExecutionFailed => "execution_failed",
            ExecutionCancelled => "execution_cancelled",
            ExecutionRerun => "execution_rerun",
            StepStarted => "step_started",
            StepCompleted => "step_completed",
            StepFailed => "step_failed",
    }
);

impl EventKind {
    pub fn channel(self) -> Channel {
        match self {
            EventKind::AgentRegistered
            | EventKind::AgentDeregistered
            | EventKind::AgentStatusChanged
            | EventKind::AgentUpdated => Channel::AgentActivity,
            EventKind::TaskSubmitted
            | EventKind::TaskAssigned
            | EventKind::TaskStarted
            | EventKind::TaskProgress
            | EventKind::TaskCompleted
            | EventKind::TaskFailed
            | EventKind::TaskRetrying
            | EventKind::TaskCancelled
            | EventKind::TaskExpired => Channel::TaskActivity,
            EventKind::ResourceRegistered
            | EventKind::ResourceUpdated
            | EventKind::ResourceDeleted
            | EventKind::ResourceAllocated
            | EventKind::ResourceReleased => Channel::ResourceActivity,
            EventKind::ConflictReported
            | EventKind::ConflictDetected
            | EventKind::ConflictUpdated
            | EventKind::ConflictResolved
            | EventKind::ConflictDismissed => Channel::ConflictAlerts,
            EventKind::WorkflowCreated
            | EventKind::WorkflowDeleted
            | EventKind::ExecutionStarted
            | EventKind::ExecutionCompleted
            | EventKind::ExecutionFailed
            | EventKind::ExecutionCancelled
            | EventKind::ExecutionRerun
            | EventKind::StepStarted
            | EventKind::StepCompleted
            | EventKind::StepFailed => Channel::WorkflowActivity,
        }
    }
}

/// An event about to be stored with its state change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    /// The agent the event is about, if any: used to filter and to scope `agent` subscribers.
    pub agent_id: Option<AgentId>,
    /// The task the event is about, if any.
    pub task_id: Option<TaskId>,
    /// Shared: an event is copied to the store's log, the bus and every listener, and none of
    /// them changes it.
    pub data: Arc<Value>,
    pub timestamp: DateTime<Utc>,
}

impl NewEvent {
    pub fn about_agent(kind: EventKind, agent: AgentId, data: Value, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            agent_id: Some(agent),
            task_id: None,
            data: Arc::new(data),
            timestamp: at,
        }
    }

    /// An event about neither an agent nor a task (a resource pool, say).
    pub fn about_nothing(kind: EventKind, data: Value, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            agent_id: None,
            task_id: None,
            data: Arc::new(data),
            timestamp: at,
        }
    }

    /// An event about a task and, if it has one, the agent holding it.
    pub fn about_task(
        kind: EventKind,
        task: TaskId,
        agent: Option<AgentId>,
        data: Value,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind,
            agent_id: agent,
            task_id: Some(task),
            data: Arc::new(data),
            timestamp: at,
        }
    }
}

/// A stored event, numbered by the platform-wide sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub kind: EventKind,
    pub agent_id: Option<AgentId>,
    pub task_id: Option<TaskId>,
    pub data: Arc<Value>,
    pub timestamp: DateTime<Utc>,
}

impl Event {
    pub fn stored(seq: i64, new: NewEvent) -> Self {
        Self {
            seq,
            kind: new.kind,
            agent_id: new.agent_id,
            task_id: new.task_id,
            data: new.data,
            timestamp: new.timestamp,
        }
    }

    pub fn channel(&self) -> Channel {
        self.kind.channel()
    }
}

/// The part of a task every task event carries.
/// A workflow step's task also names its workflow, execution and step, so subscribers can
/// follow one execution (`filters.execution_id`).
fn task_snapshot(task: &Task) -> Value {
    let mut data = json!({
        "task_id": task.id,
        "title": task.title,
        "status": task.status.as_str(),
        "priority": task.priority.get(),
        "assigned_agent": task.assigned_agent,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
    });
    if let Some(execution) = task.execution_id {
        data["workflow_id"] = json!(task.workflow_id);
        data["execution_id"] = json!(execution);
        data["step"] = json!(task.step);
    }
    data
}

pub fn task_submitted(task: &Task) -> NewEvent {
    let mut data = task_snapshot(task);
    data["required_capabilities"] = json!(task.required_capabilities.to_strings());
    NewEvent::about_task(
        EventKind::TaskSubmitted,
        task.id,
        None,
        data,
        task.created_at,
    )
}

/// The event a task transition causes. `holder` is the agent that held the task before it,
/// so agents see the end of their own attempts.
pub fn task_transition(
    task: &Task,
    outcome: Outcome,
    holder: Option<AgentId>,
    at: DateTime<Utc>,
) -> NewEvent {
    let mut data = task_snapshot(task);
    let kind = match outcome {
        Outcome::Assigned => {
            data["submitted_at"] = json!(task.created_at);
            EventKind::TaskAssigned
        }
        Outcome::Started => EventKind::TaskStarted,
        Outcome::Progress => {
            data["progress"] = json!(task.progress);
            EventKind::TaskProgress
        }
        Outcome::Completed => {
            data["started_at"] = json!(task.started_at.or(task.assigned_at));
            EventKind::TaskCompleted
        }
        Outcome::Requeued | Outcome::Retried => {
            data["error"] = json!(task.error);
            data["not_before"] = json!(task.not_before);
            EventKind::TaskRetrying
        }
        Outcome::Preempted => {
            data["error"] = json!(task.error);
            data["not_before"] = json!(task.not_before);
            data["preempted"] = json!(true);
            EventKind::TaskRetrying
        }
        Outcome::Failed => {
            data["error"] = json!(task.error);
            EventKind::TaskFailed
        }
        Outcome::Cancelled => EventKind::TaskCancelled,
        // Still running until its agent stops: progress news, not the end of the task.
        Outcome::CancelRequested => {
            data["cancel_requested"] = json!(true);
            EventKind::TaskProgress
        }
        Outcome::Expired => EventKind::TaskExpired,
    };
    NewEvent::about_task(kind, task.id, holder.or(task.assigned_agent), data, at)
}
