//! Event payloads: the `data` of each event, built from the state that changed.

use chrono::{DateTime, Utc};
use domain::agent::StatusChange;
use domain::{Agent, EventKind, NewEvent};
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
