//! What the platform detects on its own, as pure functions: each rule turns what the platform
//! saw into a [`Detection`] with its [`Cause`], and [`cause_gone`] says when a detected conflict
//! no longer has one. The platform gathers the inputs and stores the results.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use super::{Conflict, ConflictType, Detection, Severity};
use crate::resource::{self, Resource};
use crate::task::{Task, TaskStatus};
use crate::{AgentId, ResourceId, TaskId};

/// Why the platform opened a conflict. One cause has at most one open conflict, on every
/// replica: its stored form (`resource_contention:<pool>`, ...) is the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// Tasks wait for this pool's capacity while others hold it.
    ResourceContention { pool: ResourceId },
    /// This attempt of the task lost its lease.
    LeaseExpired { task: TaskId, attempt: u32 },
    /// The pending task's deadline passed.
    DeadlineMissed { task: TaskId },
    /// An agent reported on this attempt after it stopped being the task's current one.
    StaleAttempt { task: TaskId, attempt: u32 },
    /// No registered agent has every capability the task needs.
    CapabilityGap { task: TaskId },
    /// A cause this version does not know, as stored (a later version wrote it): kept as
    /// written, so its conflict still counts as that cause's one open conflict.
    Unknown(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ResourceContention { pool } => write!(f, "resource_contention:{pool}"),
            Cause::LeaseExpired { task, attempt } => write!(f, "lease_expired:{task}:{attempt}"),
            Cause::DeadlineMissed { task } => write!(f, "deadline_missed:{task}"),
            Cause::StaleAttempt { task, attempt } => write!(f, "stale_attempt:{task}:{attempt}"),
            Cause::CapabilityGap { task } => write!(f, "capability_gap:{task}"),
            Cause::Unknown(key) => f.write_str(key),
        }
    }
}

impl Cause {
    /// A stored cause: one this version knows, else kept as written.
    pub fn read(stored: &str) -> Self {
        stored
            .parse()
            .unwrap_or_else(|_| Cause::Unknown(stored.to_owned()))
    }
}

impl FromStr for Cause {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a conflict cause: '{text}'");
        let mut parts = text.split(':');
        let (kind, id) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
        let attempt = parts.next().map(|a| a.parse::<u32>().map_err(|_| bad()));
        if parts.next().is_some() {
            return Err(bad());
        }
        let task = || id.parse::<TaskId>().map_err(|_| bad());
        match (kind, attempt) {
            ("resource_contention", None) => Ok(Cause::ResourceContention {
                pool: id.parse::<ResourceId>().map_err(|_| bad())?,
            }),
            ("lease_expired", Some(attempt)) => Ok(Cause::LeaseExpired {
                task: task()?,
                attempt: attempt?,
            }),
            ("deadline_missed", None) => Ok(Cause::DeadlineMissed { task: task()? }),
            ("stale_attempt", Some(attempt)) => Ok(Cause::StaleAttempt {
                task: task()?,
                attempt: attempt?,
            }),
            ("capability_gap", None) => Ok(Cause::CapabilityGap { task: task()? }),
            _ => Err(bad()),
        }
    }
}

fn metadata(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// An attempt of `task` lost its lease; `holder` held it.
pub fn lease_expired(task: &Task, holder: Option<AgentId>, attempt: u32) -> Detection {
    Detection {
        conflict_type: ConflictType::LeaseExpired,
        severity: Severity::Medium,
        description: format!(
            "task {} lost its lease: attempt {attempt} sent no heartbeat within {} s",
            task.id, task.lease_seconds
        ),
        cause: Cause::LeaseExpired {
            task: task.id,
            attempt,
        },
        agent_id: holder,
        task_id: Some(task.id),
        involved_agents: holder.into_iter().collect(),
        involved_tasks: vec![task.id],
        resource_id: None,
        metadata: metadata(json!({"attempt": attempt, "task_status": task.status.as_str()})),
    }
}

/// A pending task's deadline passed before any agent could run it.
pub fn deadline_missed(task: &Task) -> Detection {
    Detection {
        conflict_type: ConflictType::DeadlineMissed,
        severity: Severity::High,
        description: format!(
            "task {} expired: its deadline passed before any agent could run it{}",
            task.id,
            task.pending_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        cause: Cause::DeadlineMissed { task: task.id },
        agent_id: None,
        task_id: Some(task.id),
        involved_agents: Vec::new(),
        involved_tasks: vec![task.id],
        resource_id: None,
        metadata: metadata(json!({"deadline": task.deadline})),
    }
}

/// `agent` reported on attempt `attempt` of `task`, which is no longer the current one.
pub fn stale_report(agent: AgentId, task: TaskId, attempt: u32) -> Detection {
    Detection {
        conflict_type: ConflictType::StateInconsistency,
        severity: Severity::Low,
        description: format!(
            "agent {agent} reported on attempt {attempt} of task {task}, which is no longer current"
        ),
        cause: Cause::StaleAttempt { task, attempt },
        agent_id: Some(agent),
        task_id: Some(task),
        involved_agents: vec![agent],
        involved_tasks: vec![task],
        resource_id: None,
        metadata: metadata(json!({"attempt": attempt, "stale_report": true})),
    }
}

/// A waiting task no registered agent could ever run: none has every capability it needs.
pub fn capability_gap(task: &Task) -> Detection {
    let required = task.required_capabilities.to_strings();
    Detection {
        conflict_type: ConflictType::CapabilityGap,
        severity: Severity::High,
        description: format!(
            "no registered agent has every capability task {} requires ({})",
            task.id,
            required.join(", ")
        ),
        cause: Cause::CapabilityGap { task: task.id },
        agent_id: None,
        task_id: Some(task.id),
        involved_agents: Vec::new(),
        involved_tasks: vec![task.id],
        resource_id: None,
        metadata: metadata(json!({"required_capabilities": required})),
    }
}

/// Most waiting or holding tasks a contention conflict lists by ID; it says how many more
/// there were.
pub const MAX_LISTED: usize = 100;

/// What one scheduling pass saw of contention: for each pool with tasks waiting (`waiting`:
/// task and pool) for its capacity while others (`holders`) hold it, one detection.
pub fn contention(
    waiting: &[(TaskId, ResourceId)],
    pools: &[Resource],
    holders: &[Task],
) -> Vec<Detection> {
    let mut by_pool: BTreeMap<ResourceId, Vec<TaskId>> = BTreeMap::new();
    for (task, pool) in waiting {
        by_pool.entry(*pool).or_default().push(*task);
    }
    let mut found = Vec::new();
    for (pool_id, waiters) in by_pool {
        let Some(pool) = pools.iter().find(|p| p.id == pool_id) else {
            continue;
        };
        let held = resource::allocations(pool, holders);
        if held.is_empty() {
            continue;
        }
        let mut agents: Vec<AgentId> = Vec::new();
        for a in held.iter().filter_map(|a| a.agent) {
            if !agents.contains(&a) {
                agents.push(a);
            }
        }
        let holding: Vec<TaskId> = held.iter().map(|a| a.task).collect();
        // Holders first: when the list is cut, the ones a strategy acts on stay in it.
        let mut tasks = holding.clone();
        tasks.extend(waiters.iter().copied());
        found.push(Detection {
            conflict_type: ConflictType::ResourceContention,
            severity: Severity::Medium,
            description: format!(
                "{} task(s) wait for resource {} while {} task(s) hold it",
                waiters.len(),
                pool.name,
                holding.len()
            ),
            cause: Cause::ResourceContention { pool: pool.id },
            agent_id: None,
            task_id: waiters.first().copied(),
            involved_agents: agents,
            involved_tasks: tasks,
            resource_id: Some(pool.id),
            metadata: metadata(json!({
                "resource": pool.name,
                "waiting": listed(&waiters),
                "waiting_not_listed": waiters.len().saturating_sub(MAX_LISTED),
                "holding": listed(&holding),
                "holding_not_listed": holding.len().saturating_sub(MAX_LISTED),
            })),
        });
    }
    found
}

fn listed(tasks: &[TaskId]) -> &[TaskId] {
    &tasks[..tasks.len().min(MAX_LISTED)]
}

/// Whether telling if `conflict`'s cause is gone needs to know if any registered agent has
/// every capability `task` requires.
pub fn needs_capability_check(conflict: &Conflict, task: Option<&Task>) -> bool {
    conflict.conflict_type == ConflictType::CapabilityGap
        && task.is_some_and(|t| t.status == TaskStatus::Pending)
}

/// Why a detected conflict's cause is gone, if it is: `task` is the task it is about as it is
/// now (`None` when deleted), `capable_exists` whether a registered agent could run it (asked
/// only when [`needs_capability_check`] says so).
pub fn cause_gone(
    conflict: &Conflict,
    task: Option<&Task>,
    capable_exists: bool,
) -> Option<String> {
    let id = conflict.task_id?;
    let Some(task) = task else {
        return Some(format!("task {id} no longer exists"));
    };
    match conflict.conflict_type {
        ConflictType::CapabilityGap if task.status != TaskStatus::Pending => {
            Some(format!("task {id} is {} now", task.status))
        }
        ConflictType::CapabilityGap => capable_exists
            .then(|| "an agent with the required capabilities is registered".to_owned()),
        ConflictType::StateInconsistency if task.status.is_terminal() => {
            Some(format!("task {id} has finished ({})", task.status))
        }
        ConflictType::DeadlineMissed if task.status != TaskStatus::Expired => {
            Some(format!("task {id} is {} now", task.status))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_written_and_read_back_as_before() {
        let task = TaskId(uuid::Uuid::from_u128(1));
        let pool = ResourceId(uuid::Uuid::from_u128(2));
        for (cause, text) in [
            (
                Cause::ResourceContention { pool },
                "resource_contention:00000000-0000-0000-0000-000000000002",
            ),
            (
                Cause::LeaseExpired { task, attempt: 3 },
                "lease_expired:00000000-0000-0000-0000-000000000001:3",
            ),
            (
                Cause::DeadlineMissed { task },
                "deadline_missed:00000000-0000-0000-0000-000000000001",
            ),
            (
                Cause::StaleAttempt { task, attempt: 2 },
                "stale_attempt:00000000-0000-0000-0000-000000000001:2",
            ),
            (
                Cause::CapabilityGap { task },
                "capability_gap:00000000-0000-0000-0000-000000000001",
            ),
        ] {
            assert_eq!(cause.to_string(), text);
            assert_eq!(text.parse::<Cause>().unwrap(), cause);
        }
        for junk in [
            "",
            "lease_expired:x:1",
            "deadline_missed:00000000-0000-0000-0000-000000000001:1",
            "other:1",
        ] {
            assert!(junk.parse::<Cause>().is_err(), "{junk}");
        }
    }

    #[test]
    fn a_contention_lists_at_most_a_hundred_waiters_and_counts_the_rest() {
        use crate::{NewResource, NewTask, ResourceClaim, ResourceMap, TaskInput};
        let now = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let object = |v: serde_json::Value| v.as_object().unwrap().clone();
        let pool = Resource::register(
            ResourceId(uuid::Uuid::from_u128(1)),
            NewResource::parse("gpus", "gpu", &object(json!({"gpus": 1})), Map::new()).unwrap(),
            now,
        );
        let claim = ResourceClaim {
            resource: "gpus".into(),
            amount: ResourceMap::from_json("a", &object(json!({"gpus": 1}))).unwrap(),
        };
        let input = TaskInput {
            title: "t".into(),
            ..TaskInput::default()
        };
        let mut holder = Task::submit(
            NewTask::parse(input, now).unwrap(),
            TaskId(uuid::Uuid::from_u128(2)),
            now,
        );
        holder.resource_claims = vec![claim];
        holder
            .assign(AgentId(uuid::Uuid::from_u128(3)), now)
            .unwrap();
        let waiting: Vec<(TaskId, ResourceId)> = (0..150u128)
            .map(|n| (TaskId(uuid::Uuid::from_u128(100 + n)), pool.id))
            .collect();
        let found = contention(&waiting, std::slice::from_ref(&pool), &[holder]);
        assert_eq!(found.len(), 1);
        let metadata = &found[0].metadata;
        assert_eq!(metadata["waiting"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(metadata["waiting_not_listed"], 50);
        assert_eq!(metadata["holding_not_listed"], 0);
        assert!(found[0].description.starts_with("150 task(s) wait"));
        // The conflict lists the holder first, and counts who it leaves out.
        let conflict = Conflict::detect(
            crate::ConflictId(uuid::Uuid::from_u128(9)),
            found[0].clone(),
            now,
        );
        assert_eq!(conflict.involved_tasks.len(), super::super::MAX_INVOLVED);
        assert_eq!(conflict.involved_tasks[0], TaskId(uuid::Uuid::from_u128(2)));
        assert_eq!(
            conflict.metadata.as_map()["involved_tasks_not_listed"],
            151 - super::super::MAX_INVOLVED
        );
    }
}
