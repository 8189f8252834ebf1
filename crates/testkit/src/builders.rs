//! Builders for realistic inputs, so tests say what matters and nothing else.

use chrono::{DateTime, Utc};
use domain::credential::KEY_PREFIX;
use domain::{
    Agent, AgentId, ApiKey, ApiKeyId, NewAgent, NewTask, Principal, Role, Task, TaskId, TaskInput,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// A valid registration with the given name and capabilities, 2 CPUs and 1Gi of memory.
pub fn new_agent(name: &str, capabilities: &[&str]) -> NewAgent {
    let caps: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
    NewAgent::parse(
        name,
        &caps,
        json!({"cpu": 2, "memory": "1Gi"})
            .as_object()
            .expect("object"),
        json!({"team": "ai", "version": "1.0"})
            .as_object()
            .expect("object")
            .clone(),
        Some(2),
    )
    .expect("valid registration")
}

/// A registered agent with a fixed ID number, created at `at`.
pub fn agent(n: u128, name: &str, capabilities: &[&str], at: DateTime<Utc>) -> Agent {
    Agent::register(
        new_agent(name, capabilities),
        AgentId(Uuid::from_u128(n)),
        at,
    )
}

/// An `agent`-role API key for `agent`, with a hash derived from `n`.
pub fn agent_key(n: u128, agent: AgentId, at: DateTime<Utc>) -> ApiKey {
    ApiKey {
        id: ApiKeyId(Uuid::from_u128(n)),
        name: format!("agent-key-{n}"),
        prefix: format!("{KEY_PREFIX}{n:07}"),
        hash: domain::KeyHash(format!("{n:064x}")),
        role: Role::Agent,
        agent_id: Some(agent),
        created_at: at,
        expires_at: None,
        revoked_at: None,
    }
}

/// A caller with the given role.
pub fn principal(role: Role) -> Principal {
    Principal {
        subject: format!("test-{role}"),
        role,
        agent_id: None,
        expires_at: None,
        api_key: None,
        user_token: None,
    }
}

/// A caller that is the given agent.
pub fn agent_principal(agent: AgentId) -> Principal {
    Principal {
        subject: format!("agent-{agent}"),
        role: Role::Agent,
        agent_id: Some(agent),
        expires_at: None,
        api_key: None,
        user_token: None,
    }
}

/// A JSON object, for metadata and resource maps.
pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("a JSON object").clone()
}

/// A valid submission: priority `priority`, requiring `capabilities`, 1 CPU and 512Mi.
pub fn new_task(title: &str, priority: i64, capabilities: &[&str], at: DateTime<Utc>) -> NewTask {
    NewTask::parse(
        TaskInput {
            title: title.to_owned(),
            description: Some("a test task".into()),
            priority: Some(priority),
            required_capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            resources: object(json!({"cpu": 1, "memory": "512Mi"})),
            metadata: object(json!({"customer_id": "12345"})),
            ..TaskInput::default()
        },
        at,
    )
    .expect("valid submission")
}

/// A submitted task with a fixed ID number.
pub fn task(n: u128, priority: i64, capabilities: &[&str], at: DateTime<Utc>) -> Task {
    Task::submit(
        new_task(&format!("task-{n}"), priority, capabilities, at),
        TaskId(Uuid::from_u128(n)),
        at,
    )
}
