//! Platform events: what changed, on which channel, about whom.
//!
//! An event is created together with the state change it describes and stored in the same
//! transaction; the store gives it its platform-wide `seq`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{AgentId, TaskId};

/// The channels a subscriber can choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    AgentActivity,
    TaskActivity,
    ConflictAlerts,
    ResourceActivity,
    WorkflowActivity,
    SystemMetrics,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::AgentActivity,
        Channel::TaskActivity,
        Channel::ConflictAlerts,
        Channel::ResourceActivity,
        Channel::WorkflowActivity,
        Channel::SystemMetrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::AgentActivity => "agent_activity",
            Channel::TaskActivity => "task_activity",
            Channel::ConflictAlerts => "conflict_alerts",
            Channel::ResourceActivity => "resource_activity",
            Channel::WorkflowActivity => "workflow_activity",
            Channel::SystemMetrics => "system_metrics",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel '{s}'"))
    }
}

/// What happened. Each kind belongs to exactly one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    AgentRegistered,
    AgentDeregistered,
    AgentStatusChanged,
    AgentUpdated,
    TaskSubmitted,
    TaskAssigned,
    TaskStarted,
    TaskProgress,
    TaskCompleted,
    TaskFailed,
    TaskRetrying,
    TaskCancelled,
    TaskExpired,
    ResourceRegistered,
    ResourceUpdated,
    ResourceDeleted,
    ResourceAllocated,
    ResourceReleased,
    ConflictReported,
    ConflictDetected,
    ConflictUpdated,
    ConflictResolved,
    ConflictDismissed,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        EventKind::AgentRegistered,
        EventKind::AgentDeregistered,
        EventKind::AgentStatusChanged,
        EventKind::AgentUpdated,
        EventKind::TaskSubmitted,
        EventKind::TaskAssigned,
        EventKind::TaskStarted,
        EventKind::TaskProgress,
        EventKind::TaskCompleted,
        EventKind::TaskFailed,
        EventKind::TaskRetrying,
        EventKind::TaskCancelled,
        EventKind::TaskExpired,
        EventKind::ResourceRegistered,
        EventKind::ResourceUpdated,
        EventKind::ResourceDeleted,
        EventKind::ResourceAllocated,
        EventKind::ResourceReleased,
        EventKind::ConflictReported,
        EventKind::ConflictDetected,
        EventKind::ConflictUpdated,
        EventKind::ConflictResolved,
        EventKind::ConflictDismissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentRegistered => "agent_registered",
            EventKind::AgentDeregistered => "agent_deregistered",
            EventKind::AgentStatusChanged => "agent_status_changed",
            EventKind::AgentUpdated => "agent_updated",
            EventKind::TaskSubmitted => "task_submitted",
            EventKind::TaskAssigned => "task_assigned",
            EventKind::TaskStarted => "task_started",
            EventKind::TaskProgress => "task_progress",
            EventKind::TaskCompleted => "task_completed",
            EventKind::TaskFailed => "task_failed",
            EventKind::TaskRetrying => "task_retrying",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::TaskExpired => "task_expired",
            EventKind::ResourceRegistered => "resource_registered",
            EventKind::ResourceUpdated => "resource_updated",
            EventKind::ResourceDeleted => "resource_deleted",
            EventKind::ResourceAllocated => "resource_allocated",
            EventKind::ResourceReleased => "resource_released",
            EventKind::ConflictReported => "conflict_reported",
            EventKind::ConflictDetected => "conflict_detected",
            EventKind::ConflictUpdated => "conflict_updated",
            EventKind::ConflictResolved => "conflict_resolved",
            EventKind::ConflictDismissed => "conflict_dismissed",
        }
    }

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

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event type '{s}'"))
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
