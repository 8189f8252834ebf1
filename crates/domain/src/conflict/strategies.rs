//! The resolution strategies, as pure functions: each looks at the conflict and the state
//! around it and returns a [`Decision`]: the outcome to record and the [`Effect`]s the platform
//! applies.
//!
//! Long because the strategies' scenarios follow them as unit tests; the strategies themselves
//! are about four hundred lines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{check_text, Conflict, Severity, Strategy};
use crate::resource::{self, Resource};
use crate::scheduler::{effective_priority, Policy};
use crate::task::{Task, TaskStatus};
use crate::{Agent, AgentId, TaskId};

/// Something a resolution makes the platform do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a held task back to the queue (it is preemptible, or its agent lost the dispute),
    /// if it is still in the attempt named.
    Requeue {
        task: TaskId,
        attempt: u32,
        preempt: bool,
        reason: String,
    },
    /// Suspend an agent: it takes no new work, and its tasks go back to the queue.
    SuspendAgent { agent: AgentId, reason: String },
    /// Retry a failed, cancelled or expired task.
    Retry { task: TaskId },
}

/// What a strategy decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: String,
    pub effects: Vec<Effect>,
    pub details: Value,
}

/// The state a strategy decides on: the tasks and agents the conflict involves, and, for a
/// conflict about a pool, the pool and every task holding part of any pool.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tasks: &'a [Task],
    pub agents: &'a [Agent],
    pub pool: Option<&'a Resource>,
    pub holders: &'a [Task],
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
    /// True when the platform resolves on its own, false for an operator's request.
    pub automatic: bool,
}

/// Applies `strategy` to `conflict`. `text` is the operator's own words (required by
/// `manual`). An error says why the strategy cannot settle this conflict; nothing changes then.
pub fn decide(
    conflict: &Conflict,
    strategy: Strategy,
    text: Option<&str>,
    ctx: &Context<'_>,
) -> Result<Decision, String> {
    match strategy {
        Strategy::PriorityBased => priority_based(conflict, ctx),
        Strategy::PerformanceBased => performance_based(conflict, ctx),
        Strategy::Consensus => consensus(conflict),
        Strategy::PolicyEnforcement => policy_enforcement(conflict),
        Strategy::RetryWithBackoff => retry_with_backoff(conflict, ctx),
        Strategy::Manual => {
            let text = text.ok_or("the manual strategy needs a resolution text")?;
            let text = check_text(text).map_err(|e| format!("resolution {e}"))?;
            Ok(Decision {
                outcome: text,
                effects: Vec::new(),
                details: json!({}),
            })
        }
    }
}

fn involved_tasks<'a>(conflict: &Conflict, ctx: &Context<'a>) -> Vec<&'a Task> {
    ctx.tasks
        .iter()
        .filter(|t| conflict.task_id == Some(t.id) || conflict.involved_tasks.contains(&t.id))
        .collect()
}

/// The highest effective priority claimant wins; for a pool, lower-priority preemptible
/// holders make room for it if, together, they free enough.
fn priority_based(conflict: &Conflict, ctx: &Context<'_>) -> Result<Decision, String> {
    let mut contenders: Vec<&Task> = involved_tasks(conflict, ctx)
        .into_iter()
        .filter(|t| !t.status.is_terminal())
        .collect();
    if contenders.is_empty() {
        return Err("priority_based needs unfinished tasks involved in the conflict".into());
    }
    let rank = |t: &Task| effective_priority(t, ctx.now, ctx.policy);
    contenders.sort_by(|a, b| {
        rank(b)
            .total_cmp(&rank(a))
            .then(a.created_at.cmp(&b.created_at))
    });
    // Over a pool, the capacity goes to whoever waits: the top waiter prevails, whatever the
    // holders' priorities (a holder outranking it keeps what it holds).
    let winner = match ctx.pool {
        Some(_) => contenders
            .iter()
            .copied()
            .find(|t| t.status == TaskStatus::Pending)
            .unwrap_or(contenders[0]),
        None => contenders[0],
    };
    let mut details = json!({
        "winner_task": winner.id,
        "effective_priority": rank(winner),
    });
    let Some(pool) = ctx.pool else {
        return Ok(Decision {
            outcome: format!(
                "task {} prevails with effective priority {:.2}",
                winner.id,
                rank(winner)
            ),
            effects: Vec::new(),
            details,
        });
    };
    if winner.status != TaskStatus::Pending {
        return Ok(Decision {
            outcome: format!("task {} already holds resource {}", winner.id, pool.name),
            effects: Vec::new(),
            details,
        });
    }
    // What the winner still lacks of the pool, its claims on it counted together.
    let held = resource::allocated(pool, ctx.holders);
    let free = pool.available(&held);
    let mut needs: BTreeMap<String, i128> = BTreeMap::new();
    for claim in winner
        .resource_claims
        .iter()
        .filter(|c| pool.is_named(&c.resource))
    {
        for (dim, q) in claim.amount.iter() {
            *needs.entry(dim.to_owned()).or_insert(0) += q.nanos();
        }
    }
    let mut lacking: BTreeMap<String, i128> = needs
        .into_iter()
        .map(|(dim, need)| {
            let short = need - free.get(&dim);
            (dim, short)
        })
        .filter(|(_, short)| *short > 0)
        .collect();
    // Lowest priority first, newest first among equals: the least lost work goes back.
    let mut victims: Vec<&Task> = ctx
        .holders
        .iter()
        .filter(|t| {
            t.preemptible
                && t.status.is_active()
                && rank(t) < rank(winner)
                && t.resource_claims.iter().any(|c| pool.is_named(&c.resource))
        })
        .collect();
    victims.sort_by(|a, b| {
        rank(a)
            .total_cmp(&rank(b))
            .then(b.assigned_at.cmp(&a.assigned_at))
    });
    let mut chosen = Vec::new();
    for victim in victims {
        if lacking.values().all(|v| *v <= 0) {
            break;
        }
        let mut frees_something = false;
        for claim in victim
            .resource_claims
            .iter()
            .filter(|c| pool.is_named(&c.resource))
        {
            for (dim, q) in claim.amount.iter() {
                if let Some(short) = lacking.get_mut(dim) {
                    if *short > 0 {
                        *short -= q.nanos();
                        frees_something = true;
                    }
                }
            }
        }
        if frees_something {
            chosen.push(victim);
        }
    }
    let enough = lacking.values().all(|v| *v <= 0);
    if lacking.is_empty() || !enough {
        details["preempted"] = json!([]);
        return Ok(Decision {
            outcome: format!(
                "task {} gets resource {} next, as soon as enough of it is released",
                winner.id, pool.name
            ),
            effects: Vec::new(),
            details,
        });
    }
    details["preempted"] = json!(chosen.iter().map(|t| t.id).collect::<Vec<_>>());
    Ok(Decision {
        outcome: format!(
            "task {} gets resource {} next; preempted {}",
            winner.id,
            pool.name,
            chosen
                .iter()
                .map(|t| t.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        effects: chosen
            .iter()
            .map(|t| Effect::Requeue {
                task: t.id,
                attempt: t.attempt,
                preempt: true,
                reason: format!(
                    "preempted to make room on resource {} for task {}",
                    pool.name, winner.id
                ),
            })
            .collect(),
        details,
    })
}

/// The most reliable agent involved wins; tasks the others hold but have not started go back
/// to the queue, where reliability weighs in the placement.
fn performance_based(conflict: &Conflict, ctx: &Context<'_>) -> Result<Decision, String> {
    let mut agents: Vec<&Agent> = ctx
        .agents
        .iter()
        .filter(|a| conflict.involves(a.id))
        .collect();
    if agents.is_empty() {
        return Err("performance_based needs agents involved in the conflict".into());
    }
    agents.sort_by(|a, b| {
        b.reliability
            .total_cmp(&a.reliability)
            .then(a.current_tasks.cmp(&b.current_tasks))
            .then(a.id.cmp(&b.id))
    });
    let winner = agents[0];
    let effects: Vec<Effect> = involved_tasks(conflict, ctx)
        .into_iter()
        .filter(|t| t.status == TaskStatus::Assigned && t.assigned_agent != Some(winner.id))
        .map(|t| Effect::Requeue {
            task: t.id,
            attempt: t.attempt,
            preempt: false,
            reason: format!("agent {} is more reliable", winner.id),
        })
        .collect();
    Ok(Decision {
        outcome: format!(
            "agent {} prevails with reliability {:.3}",
            winner.id, winner.reliability
        ),
        details: json!({
            "winner_agent": winner.id,
            "reliability": agents.iter().map(|a| json!({"agent_id": a.id, "reliability": a.reliability})).collect::<Vec<_>>(),
            "requeued": effects.len(),
        }),
        effects,
    })
}

/// The majority over `metadata.states`: an object of voter to state, or a list of states (or
/// of `{"agent_id", "state"}` objects). More than half must agree.
fn consensus(conflict: &Conflict) -> Result<Decision, String> {
    let states = conflict
        .metadata
        .as_map()
        .get("states")
        .ok_or("consensus needs metadata.states: the state each party reports")?;
    let votes: Vec<(Option<String>, String)> = match states {
        Value::Object(map) => map
            .iter()
            .map(|(voter, state)| (Some(voter.clone()), state.to_string()))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(o) if o.contains_key("state") => (
                    o.get("agent_id").and_then(Value::as_str).map(str::to_owned),
                    o["state"].to_string(),
                ),
                other => (None, other.to_string()),
            })
            .collect(),
        _ => return Err("metadata.states must be an object or a list".into()),
    };
    if votes.is_empty() {
        return Err("metadata.states is empty".into());
    }
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, state) in &votes {
        *tally.entry(state.as_str()).or_insert(0) += 1;
    }
    let (state, count) = tally
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, n)| (*s, *n))
        .expect("at least one vote");
    if count * 2 <= votes.len() {
        return Err(format!(
            "no majority: the most common state has {count} of {} votes",
            votes.len()
        ));
    }
    let dissenters: Vec<&str> = votes
        .iter()
        .filter(|(_, s)| s != state)
        .filter_map(|(voter, _)| voter.as_deref())
        .collect();
    let agreed: Value = serde_json::from_str(state).unwrap_or(Value::Null);
    Ok(Decision {
        outcome: format!("majority state {state} ({count} of {} votes)", votes.len()),
        effects: Vec::new(),
        details: json!({"state": agreed, "votes": count, "total": votes.len(), "dissenters": dissenters}),
    })
}

/// `critical` suspends the offending agent and requeues its tasks; `high` records a warning;
/// lower severities are recorded only.
fn policy_enforcement(conflict: &Conflict) -> Result<Decision, String> {
    let agent = conflict
        .agent_id
        .or_else(|| conflict.involved_agents.first().copied())
        .ok_or("policy_enforcement needs the agent the conflict is about")?;
    let (outcome, effects) = match conflict.severity {
        Severity::Critical => (
            format!("agent {agent} suspended; its tasks go back to the queue"),
            vec![Effect::SuspendAgent {
                agent,
                reason: format!("policy violation (conflict {})", conflict.id),
            }],
        ),
        Severity::High => (
            format!("warning recorded against agent {agent}"),
            Vec::new(),
        ),
        s => (format!("recorded; no action at severity {s}"), Vec::new()),
    };
    Ok(Decision {
        outcome,
        details: json!({"agent_id": agent, "severity": conflict.severity.as_str(), "warning": conflict.severity == Severity::High}),
        effects,
    })
}

/// Tasks try again after a backoff: a held one goes back to the queue with its next attempt; a
/// failed, cancelled or expired one is retried when an operator asks (never automatically, so a
/// task that keeps failing cannot loop).
fn retry_with_backoff(conflict: &Conflict, ctx: &Context<'_>) -> Result<Decision, String> {
    let tasks = involved_tasks(conflict, ctx);
    if tasks.is_empty() {
        return Err("retry_with_backoff needs tasks involved in the conflict".into());
    }
    let mut effects = Vec::new();
    let mut notes = Vec::new();
    for task in tasks {
        match task.status {
            s if s.is_active() => {
                effects.push(Effect::Requeue {
                    task: task.id,
                    attempt: task.attempt,
                    preempt: false,
                    reason: format!("retried with backoff (conflict {})", conflict.id),
                });
                notes.push(format!("task {} requeued with backoff", task.id));
            }
            TaskStatus::Pending => notes.push(format!(
                "task {} is queued again (attempt {}, not before {})",
                task.id,
                task.attempt,
                task.not_before
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            TaskStatus::Completed => notes.push(format!("task {} has completed", task.id)),
            _ if ctx.automatic => notes.push(format!(
                "task {} is {}; an operator may retry it",
                task.id, task.status
            )),
            _ => {
                effects.push(Effect::Retry { task: task.id });
                notes.push(format!("task {} retried", task.id));
            }
        }
    }
    Ok(Decision {
        outcome: notes.join("; "),
        details: json!({"requeued": effects.len()}),
        effects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::*;
    use serde_json::Map;

    fn conflict(severity: Severity, metadata: Value) -> Conflict {
        let report = ConflictReport::parse(
            Some("00000000-0000-0000-0000-000000000001"),
            None,
            "policy_violation",
            "agent exceeded its budget",
            severity.as_str(),
            metadata.as_object().unwrap().clone(),
        )
        .unwrap();
        Conflict::report(
            crate::ConflictId(uuid::Uuid::from_u128(9)),
            report,
            "op",
            Utc::now(),
        )
    }

    #[test]
    fn reports_are_validated_field_by_field() {
        let err = ConflictReport::parse(
            Some("agent-123"),
            Some("nope"),
            "fight",
            " ",
            "urgent",
            Map::new(),
        )
        .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "agent_id",
                "task_id",
                "conflict_type",
                "description",
                "severity"
            ]
        );
    }

    #[test]
    fn policy_enforcement_suspends_only_on_critical() {
        let policy = Policy::default();
        let ctx = Context {
            tasks: &[],
            agents: &[],
            pool: None,
            holders: &[],
            now: Utc::now(),
            policy: &policy,
            automatic: false,
        };
        let critical = decide(
            &conflict(Severity::Critical, json!({})),
            Strategy::PolicyEnforcement,
            None,
            &ctx,
        )
        .unwrap();
        assert!(matches!(
            critical.effects.as_slice(),
            [Effect::SuspendAgent { .. }]
        ));
        let high = decide(
            &conflict(Severity::High, json!({})),
            Strategy::PolicyEnforcement,
            None,
            &ctx,
        )
        .unwrap();
        assert!(high.effects.is_empty());
        assert!(high.outcome.contains("warning"));
    }

    fn claiming(n: u128, priority: i64, gpus: u32, preemptible: bool) -> Task {
        let input = crate::TaskInput {
            title: format!("t{n}"),
            priority: Some(priority),
            resource_claims: vec![(
                "gpus".into(),
                json!({"gpus": gpus}).as_object().unwrap().clone(),
            )],
            preemptible: Some(preemptible),
            ..crate::TaskInput::default()
        };
        let now = Utc::now();
        Task::submit(
            crate::NewTask::parse(input, now).unwrap(),
            TaskId(uuid::Uuid::from_u128(n)),
            now,
        )
    }

    #[test]
    fn the_top_waiter_gets_room_even_when_a_holder_outranks_it() {
        let new = crate::NewResource::parse(
            "gpus",
            "gpu",
            json!({"gpus": 4}).as_object().unwrap(),
            Map::new(),
        )
        .unwrap();
        let pool = Resource::register(ResourceId(uuid::Uuid::from_u128(99)), new, Utc::now());
        let agent = AgentId(uuid::Uuid::from_u128(50));
        let mut critical = claiming(1, 10, 2, false);
        let mut batch = claiming(2, 1, 2, true);
        for t in [&mut critical, &mut batch] {
            t.assign(agent, Utc::now()).unwrap();
        }
        let waiter = claiming(3, 6, 2, false);
        let conflict = Conflict::detect(
            crate::ConflictId(uuid::Uuid::from_u128(7)),
            Detection {
                conflict_type: ConflictType::ResourceContention,
                severity: Severity::Medium,
                description: "contention".into(),
                cause: Cause::ResourceContention { pool: pool.id },
                agent_id: None,
                task_id: Some(waiter.id),
                involved_agents: vec![agent],
                involved_tasks: vec![waiter.id, critical.id, batch.id],
                resource_id: Some(pool.id),
                metadata: Map::new(),
            },
            Utc::now(),
        );
        let holders = [critical.clone(), batch.clone()];
        let tasks = [waiter.clone(), critical, batch.clone()];
        let policy = Policy::default();
        let ctx = Context {
            tasks: &tasks,
            agents: &[],
            pool: Some(&pool),
            holders: &holders,
            now: Utc::now(),
            policy: &policy,
            automatic: true,
        };
        let decision = decide(&conflict, Strategy::PriorityBased, None, &ctx).unwrap();
        assert_eq!(decision.details["winner_task"], json!(waiter.id));
        assert_eq!(
            decision.effects,
            [Effect::Requeue {
                task: batch.id,
                attempt: 1,
                preempt: true,
                reason: format!(
                    "preempted to make room on resource gpus for task {}",
                    waiter.id
                ),
            }]
        );
    }

    #[test]
    fn consensus_needs_a_strict_majority() {
        let policy = Policy::default();
        let ctx = Context {
            tasks: &[],
            agents: &[],
            pool: None,
            holders: &[],
            now: Utc::now(),
            policy: &policy,
            automatic: false,
        };
        let agreed = conflict(
            Severity::Low,
            json!({"states": {"a": "done", "b": "done", "c": "running"}}),
        );
        let d = decide(&agreed, Strategy::Consensus, None, &ctx).unwrap();
        assert_eq!(d.details["state"], "done");
        assert_eq!(d.details["dissenters"], json!(["c"]));
        let split = conflict(Severity::Low, json!({"states": ["x", "y"]}));
        assert!(decide(&split, Strategy::Consensus, None, &ctx)
            .unwrap_err()
            .contains("no majority"));
        assert!(decide(&split, Strategy::Manual, None, &ctx).is_err());
        assert_eq!(
            decide(&split, Strategy::Manual, Some("kept x"), &ctx)
                .unwrap()
                .outcome,
            "kept x"
        );
    }
}
