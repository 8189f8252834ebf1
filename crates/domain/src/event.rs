//! Platform events: what changed, on which channel, about whom.
//!
//! An event is created together with the state change it describes and stored in the same
//! transaction; the store gives it its platform-wide `seq`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{AgentId, TaskId};

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
    pub data: Value,
    pub timestamp: DateTime<Utc>,
}

impl NewEvent {
    pub fn about_agent(kind: EventKind, agent: AgentId, data: Value, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            agent_id: Some(agent),
            task_id: None,
            data,
            timestamp: at,
        }
    }

    /// An event about neither an agent nor a task (a resource pool, say).
    pub fn about_nothing(kind: EventKind, data: Value, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            agent_id: None,
            task_id: None,
            data,
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
            data,
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
    pub data: Value,
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
