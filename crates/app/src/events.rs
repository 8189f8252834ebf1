//! Event payloads: the `data` of each event, built from the state that changed.

use chrono::{DateTime, Utc};
use domain::agent::StatusChange;
use domain::{
    Agent, AgentId, Conflict, ConflictStatus, EventKind, NewEvent, Resource, ResourceClaim, Source,
    Task,
};
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

pub(crate) use domain::event::{task_submitted, task_transition};

/// The part of a pool every pool event carries.
fn resource_snapshot(pool: &Resource) -> Value {
    json!({
        "resource_id": pool.id,
        "name": pool.name,
        "type": pool.kind,
        "capacity": pool.capacity.to_json(),
        "maintenance": pool.maintenance,
    })
}

pub(crate) fn resource_registered(pool: &Resource) -> NewEvent {
    NewEvent::about_nothing(
        EventKind::ResourceRegistered,
        resource_snapshot(pool),
        pool.created_at,
    )
}

pub(crate) fn resource_updated(pool: &Resource, before: &Resource) -> NewEvent {
    let mut data = resource_snapshot(pool);
    let mut fields = Vec::new();
    if pool.capacity != before.capacity {
        fields.push("capacity");
    }
    if pool.metadata != before.metadata {
        fields.push("metadata");
    }
    if pool.maintenance != before.maintenance {
        fields.push("status");
    }
    data["fields"] = json!(fields);
    NewEvent::about_nothing(EventKind::ResourceUpdated, data, pool.updated_at)
}

pub(crate) fn resource_deleted(pool: &Resource, at: DateTime<Utc>) -> NewEvent {
    NewEvent::about_nothing(EventKind::ResourceDeleted, resource_snapshot(pool), at)
}

/// A task's claim on a pool, taken (with its assignment) or given back (as its attempt ended).
pub(crate) fn resource_claim(
    kind: EventKind,
    pool: Option<&Resource>,
    claim: &ResourceClaim,
    task: &Task,
    holder: Option<AgentId>,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent::about_task(
        kind,
        task.id,
        holder,
        json!({
            "resource_id": pool.map(|p| p.id),
            "name": pool.map_or(claim.resource.as_str(), |p| p.name.as_str()),
            "task_id": task.id,
            "agent_id": holder,
            "attempt": task.attempt,
            "amount": claim.amount.to_json(),
        }),
        at,
    )
}

/// The part of a conflict every conflict event carries.
fn conflict_snapshot(conflict: &Conflict) -> Value {
    json!({
        "conflict_id": conflict.id,
        "conflict_type": conflict.conflict_type.as_str(),
        "severity": conflict.severity.as_str(),
        "status": conflict.status.as_str(),
        "source": conflict.source.as_str(),
        "description": conflict.description,
        "agent_id": conflict.agent_id,
        "task_id": conflict.task_id,
        "involved_agents": conflict.involved_agents,
        "involved_tasks": conflict.involved_tasks,
        "resource_id": conflict.resource_id,
    })
}

fn conflict_event(
    kind: EventKind,
    conflict: &Conflict,
    data: Value,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        kind,
        agent_id: conflict.agent_id,
        task_id: conflict.task_id,
        data: data.into(),
        timestamp: at,
    }
}

/// `conflict_reported` or `conflict_detected`, by who raised it.
pub(crate) fn conflict_opened(conflict: &Conflict) -> NewEvent {
    let kind = match conflict.source {
        Source::Reported => EventKind::ConflictReported,
        Source::Detected => EventKind::ConflictDetected,
    };
    conflict_event(
        kind,
        conflict,
        conflict_snapshot(conflict),
        conflict.created_at,
    )
}

pub(crate) fn conflict_updated(conflict: &Conflict) -> NewEvent {
    conflict_event(
        EventKind::ConflictUpdated,
        conflict,
        conflict_snapshot(conflict),
        conflict.updated_at,
    )
}

/// `conflict_resolved` or `conflict_dismissed`, with the resolution.
pub(crate) fn conflict_closed(conflict: &Conflict) -> NewEvent {
    let kind = match conflict.status {
        ConflictStatus::Dismissed => EventKind::ConflictDismissed,
        _ => EventKind::ConflictResolved,
    };
    let mut data = conflict_snapshot(conflict);
    if let Some(r) = &conflict.resolution {
        data["resolution"] = json!({
            "strategy": r.strategy.map(|s| s.as_str()),
            "outcome": r.outcome,
            "decided_by": r.decided_by,
            "decided_at": r.decided_at,
            "details": r.details,
        });
    }
    conflict_event(kind, conflict, data, conflict.updated_at)
}
