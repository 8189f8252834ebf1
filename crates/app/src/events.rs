//! Event payloads: the `data` of each event, built from the state that changed.

use chrono::{DateTime, Utc};
use domain::agent::StatusChange;
use domain::task::Outcome;
use domain::{Agent, AgentId, EventKind, NewEvent, Task};
use serde_json::{json, Value};

/// The part of an agent every agent event carries.
fn agent_snapshot(agent: &Agent) -> Value {
    json!({
        "agent_id": agent.id,
        "name": agent.name,
        "status": agent.status.as_str(),
        "capabilities": agent.capabilities.to_strings(),
        "resources": agent.resources.to_json(),
        "max_concurrent_tasks": agent.max_concurrent_tasks,
        "current_tasks": agent.current_tasks,
    })
}

pub(crate) fn agent_registered(agent: &Agent) -> NewEvent {
    NewEvent::about_agent(
        EventKind::AgentRegistered,
        agent.id,
        agent_snapshot(agent),
        agent.created_at,
    )
}

pub(crate) fn agent_deregistered(agent: &Agent, at: DateTime<Utc>) -> NewEvent {
    NewEvent::about_agent(
        EventKind::AgentDeregistered,
        agent.id,
        json!({"agent_id": agent.id, "name": agent.name}),
        at,
    )
}

pub(crate) fn agent_updated(agent: &Agent, fields: &[&str], at: DateTime<Utc>) -> NewEvent {
    let mut data = agent_snapshot(agent);
    data["fields"] = json!(fields);
    NewEvent::about_agent(EventKind::AgentUpdated, agent.id, data, at)
}

pub(crate) fn agent_status_changed(
    agent: &Agent,
    change: StatusChange,
    reason: &str,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent::about_agent(
        EventKind::AgentStatusChanged,
        agent.id,
        json!({
            "agent_id": agent.id,
            "name": agent.name,
            "old_status": change.from.as_str(),
            "new_status": change.to.as_str(),
            "reason": reason,
        }),
        at,
    )
}

/// The part of a task every task event carries.
fn task_snapshot(task: &Task) -> Value {
    json!({
        "task_id": task.id,
        "title": task.title,
        "status": task.status.as_str(),
        "priority": task.priority.get(),
        "assigned_agent": task.assigned_agent,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
    })
}

pub(crate) fn task_submitted(task: &Task) -> NewEvent {
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
pub(crate) fn task_transition(
    task: &Task,
    outcome: Outcome,
    holder: Option<AgentId>,
    at: DateTime<Utc>,
) -> NewEvent {
    let mut data = task_snapshot(task);
    let kind = match outcome {
        Outcome::Assigned => EventKind::TaskAssigned,
        Outcome::Started => EventKind::TaskStarted,
        Outcome::Progress => {
            data["progress"] = json!(task.progress);
            EventKind::TaskProgress
        }
        Outcome::Completed => EventKind::TaskCompleted,
        Outcome::Requeued | Outcome::Retried => {
            data["error"] = json!(task.error);
            data["not_before"] = json!(task.not_before);
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
