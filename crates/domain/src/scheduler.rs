//! The scheduler: which pending task goes to which agent, decided as a pure function.
//!
//! Given the pending tasks, the serving agents with their free capacity, the shared pools with
//! theirs, the time and a policy, [`schedule`] returns assignments and, for every task it could
//! not place, a reason naming what is missing. Tasks are taken in effective-priority order;
//! a task that cannot be placed is skipped, never blocking smaller tasks behind it.
//!
//! Kept whole though it is long: ordering, the fleet index, pool accounting and placement are
//! one decision, and its property tests (`tests/scheduler.rs`) hold them to each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::quantity::show_nanos;
use crate::resource::{self, Resource};
use crate::task::{Task, TaskId};
use crate::WaitReason;
use crate::{Agent, AgentId, CapabilitySet, ResourceId, ResourceMap};

/// How agents are chosen among the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The least-loaded agent: spreads work across the fleet.
    Spread,
    /// The most-loaded agent that still fits: packs work onto few agents.
    BinPack,
}

/// Tunables of the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub strategy: Strategy,
    /// A waiting task gains one priority level per this much waiting...
    pub aging_step: Duration,
    /// ...up to this many levels.
    pub max_aging: f64,
    /// Within this much of its deadline, a task gains urgency...
    pub urgency_horizon: Duration,
    /// ...up to this many levels at the deadline.
    pub max_urgency: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            strategy: Strategy::Spread,
            aging_step: Duration::minutes(5),
            max_aging: 5.0,
            urgency_horizon: Duration::minutes(10),
            max_urgency: 5.0,
        }
    }
}

/// A task's priority raised by waiting and by a nearing deadline, so nothing starves.
pub fn effective_priority(task: &Task, now: DateTime<Utc>, policy: &Policy) -> f64 {
    let base = f64::from(task.priority.get());
    let waited = (now - task.created_at).num_milliseconds().max(0) as f64;
    let step = policy.aging_step.num_milliseconds().max(1) as f64;
    let aging = (waited / step).min(policy.max_aging);
    let urgency = match task.deadline {
        None => 0.0,
        Some(deadline) => {
            let left = (deadline - now).num_milliseconds() as f64;
            let horizon = policy.urgency_horizon.num_milliseconds().max(1) as f64;
            if left <= 0.0 {
                policy.max_urgency
            } else if left < horizon {
                policy.max_urgency * (1.0 - left / horizon)
            } else {
                0.0
            }
        }
    };
    base + aging + urgency
}

/// What a scheduling pass needs of a task an agent holds (assigned or running): whose it is
/// and what it uses. A pass reads one of these, not the whole task, for each task the serving
/// agents it sees hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub task: TaskId,
    pub agent: AgentId,
    pub resources: ResourceMap,
}

impl Held {
    /// `task` as its holder's capacity sees it; `None` unless an agent holds it (it is
    /// assigned or running: an ended task keeps the agent it last had, but takes no slot).
    pub fn of(task: &Task) -> Option<Self> {
        Some(Self {
            task: task.id,
            agent: task.assigned_agent.filter(|_| task.status.is_active())?,
            resources: task.resources.clone(),
        })
    }
}

/// What one serving agent can still take.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCapacity {
    pub id: AgentId,
    pub capabilities: CapabilitySet,
    pub max_slots: u32,
    pub free_slots: u32,
    /// Free amount per resource dimension, in nano-units (capacity minus running requests).
    pub free: BTreeMap<String, i128>,
    pub reliability: f64,
}

impl AgentCapacity {
    /// The capacity of `agent` given the tasks it holds; `None` unless it is serving.
    pub fn of<'a>(agent: &Agent, held: impl IntoIterator<Item = &'a Held>) -> Option<Self> {
        if !agent.status.is_serving() {
            return None;
        }
        let mut free: BTreeMap<String, i128> = agent
            .resources
            .iter()
            .map(|(k, q)| (k.to_owned(), q.nanos()))
            .collect();
        let mut used = 0u32;
        for holding in held {
            used += 1;
            for (k, q) in holding.resources.iter() {
                *free.entry(k.to_owned()).or_insert(0) -= q.nanos();
            }
        }
        Some(Self {
            id: agent.id,
            capabilities: agent.capabilities.clone(),
            max_slots: agent.max_concurrent_tasks,
            free_slots: agent.max_concurrent_tasks.saturating_sub(used),
            free,
            reliability: agent.reliability,
        })
    }

    /// The capacity of each serving agent among `agents`, in their order, given `held`: the
    /// tasks every agent holds, each counted against its own holder only.
    pub fn of_all(agents: &[Agent], held: &[Held]) -> Vec<Self> {
        let mut holding: HashMap<AgentId, Vec<&Held>> = HashMap::new();
        for one in held {
            holding.entry(one.agent).or_default().push(one);
        }
        agents
            .iter()
            .filter_map(|a| Self::of(a, holding.get(&a.id).into_iter().flatten().copied()))
            .collect()
    }

    /// True when the agent can take a task requesting `request` now.
    pub fn fits(&self, request: &ResourceMap) -> bool {
        self.free_slots > 0 && self.shortfall(request).is_none()
    }

    /// The first dimension of `request` this agent lacks, with (needed, free).
    fn shortfall(&self, request: &ResourceMap) -> Option<(String, i128, i128)> {
        request.iter().find_map(|(k, q)| {
            let free = self.free.get(k).copied().unwrap_or(0);
            (free < q.nanos()).then(|| (k.to_owned(), q.nanos(), free))
        })
    }

    fn take(&mut self, request: &ResourceMap) {
        self.free_slots -= 1;
        for (k, q) in request.iter() {
            *self.free.entry(k.to_owned()).or_insert(0) -= q.nanos();
        }
    }

    /// How much the scheduler wants this agent for its next task: higher is better.
    pub fn score(&self, strategy: Strategy) -> f64 {
        let max = f64::from(self.max_slots.max(1));
        let load_after = (f64::from(self.max_slots - self.free_slots) + 1.0) / max;
        let base = match strategy {
            Strategy::Spread => 1.0 - load_after.min(1.0),
            Strategy::BinPack => load_after.min(1.0),
        };
        // Reliability weighs in without ever ruling an agent out.
        (base + 0.01) * (0.1 + 0.9 * self.reliability.clamp(0.0, 1.0))
    }
}

/// Free capacity of the shared resource pools, addressable by ID or name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pools {
    /// Pool key by every name a claim may use (ID and name).
    refs: HashMap<String, usize>,
    ids: Vec<ResourceId>,
    names: Vec<String>,
    free: Vec<BTreeMap<String, i128>>,
    /// In maintenance: no new allocations.
    closed: Vec<bool>,
}

/// Why a task's claims do not fit now.
struct Shortfall {
    reason: WaitReason,
    /// The pool it waits on, when capacity is what is missing.
    pool: Option<usize>,
}

impl Pools {
    /// Adds a pool reachable as `id` and as `name`, with its free amounts.
    pub fn add(&mut self, id: ResourceId, name: &str, free: BTreeMap<String, i128>) {
        let key = self.free.len();
        self.refs.insert(id.to_string(), key);
        self.refs.insert(name.to_owned(), key);
        self.ids.push(id);
        self.names.push(name.to_owned());
        self.free.push(free);
        self.closed.push(false);
    }

    /// The registered pools, with what `holders` (any tasks; only assigned and running ones
    /// hold anything) leave free of them.
    pub fn of(resources: &[Resource], holders: &[Task]) -> Self {
        let mut pools = Self::default();
        for pool in resources {
            let free = pool.available(&resource::allocated(pool, holders));
            pools.add(pool.id, &pool.name, free.into_map());
            if pool.maintenance {
                *pools.closed.last_mut().expect("just added") = true;
            }
        }
        pools
    }

    /// The pool a claim names: by name or ID as written, else by ID in another spelling.
    fn key_of(&self, reference: &str) -> Option<usize> {
        self.refs.get(reference).copied().or_else(|| {
            let id = reference.parse::<uuid::Uuid>().ok()?;
            self.refs.get(&id.to_string()).copied()
        })
    }

    /// Why `task`'s claims do not fit, if they do not. Several claims on one pool (by ID and by
    /// name, say) count together.
    fn shortfall(&self, task: &Task) -> Option<Shortfall> {
        let mut needs: BTreeMap<(usize, &str), i128> = BTreeMap::new();
        for claim in &task.resource_claims {
            let Some(key) = self.key_of(&claim.resource) else {
                return Some(Shortfall {
                    reason: WaitReason::UnknownPool {
                        pool: claim.resource.clone(),
                    },
                    pool: None,
                });
            };
            if self.closed[key] {
                return Some(Shortfall {
                    reason: WaitReason::PoolInMaintenance {
                        pool: self.names[key].clone(),
                    },
                    pool: None,
                });
            }
            for (dim, q) in claim.amount.iter() {
                *needs.entry((key, dim)).or_insert(0) += q.nanos();
            }
        }
        for ((key, dim), need) in needs {
            let free = self.free[key].get(dim).copied().unwrap_or(0);
            if free < need {
                return Some(Shortfall {
                    reason: WaitReason::PoolShort {
                        pool: self.names[key].clone(),
                        dimension: dim.to_owned(),
                        free: show_nanos(free.max(0)),
                        needs: show_nanos(need),
                    },
                    pool: Some(key),
                });
            }
        }
        None
    }

    fn take(&mut self, task: &Task) {
        for claim in &task.resource_claims {
            if let Some(key) = self.key_of(&claim.resource) {
                for (dim, q) in claim.amount.iter() {
                    *self.free[key].entry(dim.to_owned()).or_insert(0) -= q.nanos();
                }
            }
        }
    }
}

/// One placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub task: TaskId,
    pub agent: AgentId,
}

/// A task left pending, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub task: TaskId,
    pub reason: WaitReason,
    /// The ID of the pool whose free capacity it waits for, if that is what stops it.
    pub waits_on: Option<ResourceId>,
}

/// The scheduler's decision for one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
}

/// The order tasks are considered in: effective priority, then earlier deadline, then older.
pub fn queue_order<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Vec<&'a Task> {
    first_in_queue(tasks, usize::MAX, now, policy)
}

/// The first `limit` tasks in [`queue_order`], found without sorting the others: a long queue
/// costs one pass over it and a sort of only the tasks taken.
pub fn first_in_queue<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    limit: usize,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Vec<&'a Task> {
    let mut keyed: Vec<(f64, &Task)> = tasks
        .into_iter()
        .map(|t| (effective_priority(t, now, policy), t))
        .collect();
    let in_order = |(pa, a): &(f64, &Task), (pb, b): &(f64, &Task)| {
        pb.total_cmp(pa)
            .then_with(|| match (a.deadline, b.deadline) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    };
    if limit == 0 {
        return Vec::new();
    }
    if limit < keyed.len() {
        keyed.select_nth_unstable_by(limit - 1, in_order);
        keyed.truncate(limit);
    }
    keyed.sort_by(in_order);
    keyed.into_iter().map(|(_, t)| t).collect()
}

/// The first `limit` tasks in the order the queue is kept in, priority then age: what a pass
/// that can place nothing reads, to keep the waiting reasons at the head of the queue current
/// (see `ports::PassSize::ranks`). PostgreSQL walks its queue index in this order.
pub fn head_of_queue<'a>(tasks: impl IntoIterator<Item = &'a Task>, limit: usize) -> Vec<&'a Task> {
    let mut tasks: Vec<&Task> = tasks.into_iter().collect();
    let in_order = |a: &&Task, b: &&Task| {
        b.priority
            .cmp(&a.priority)
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    };
    if limit == 0 {
        return Vec::new();
    }
    if limit < tasks.len() {
        tasks.select_nth_unstable_by(limit - 1, in_order);
        tasks.truncate(limit);
    }
    tasks.sort_by(in_order);
    tasks
}

/// A score, ordered so that iteration runs best first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank(f64);

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// Agents with the same capabilities, best score first (then lowest ID).
#[derive(Debug, Clone)]
struct Class {
    capabilities: CapabilitySet,
    ranked: BTreeSet<(Rank, AgentId, usize)>,
}

/// The serving fleet, indexed for placement: agents are grouped by capability set and ranked by
/// score within each group, so a decision looks at a handful of groups and, in each, only as
/// many agents as it takes to find one whose free resources fit. Fleets have few distinct
/// capability sets, which keeps a decision far below a scan of every agent.
#[derive(Debug, Clone)]
pub struct Fleet {
    agents: Vec<AgentCapacity>,
    class_of: Vec<usize>,
    classes: Vec<Class>,
    offered: BTreeSet<String>,
    strategy: Strategy,
}

impl Fleet {
    pub fn new(agents: Vec<AgentCapacity>, strategy: Strategy) -> Self {
        let mut classes: Vec<Class> = Vec::new();
        let mut by_caps: HashMap<Vec<String>, usize> = HashMap::new();
        let mut class_of = Vec::with_capacity(agents.len());
        let mut offered = BTreeSet::new();
        for (i, agent) in agents.iter().enumerate() {
            let key = agent.capabilities.to_strings();
            offered.extend(key.iter().cloned());
            let c = *by_caps.entry(key).or_insert_with(|| {
                classes.push(Class {
                    capabilities: agent.capabilities.clone(),
                    ranked: BTreeSet::new(),
                });
                classes.len() - 1
            });
            class_of.push(c);
            if agent.free_slots > 0 {
                classes[c]
                    .ranked
                    .insert((Rank(agent.score(strategy)), agent.id, i));
            }
        }
        Self {
            agents,
            class_of,
            classes,
            offered,
            strategy,
        }
    }

    /// The first required capability no agent offers, if any.
    pub fn missing_capability<'a>(&self, task: &'a Task) -> Option<&'a crate::Capability> {
        task.required_capabilities
            .iter()
            .find(|c| !self.offered.contains(c.as_str()))
    }

    /// The best agent for `task`: eligible (capabilities, a free slot, resources) with the
    /// highest score, the lowest ID on a tie. Changes nothing.
    pub fn choose(&self, task: &Task) -> Option<AgentId> {
        self.choose_index(task).map(|i| self.agents[i].id)
    }

    fn choose_index(&self, task: &Task) -> Option<usize> {
        let mut best: Option<(Rank, AgentId, usize)> = None;
        for class in &self.classes {
            if !class.capabilities.covers(&task.required_capabilities) {
                continue;
            }
            for entry in &class.ranked {
                if best.is_some_and(|b| (entry.0, entry.1) >= (b.0, b.1)) {
                    break; // nothing further down this class can win
                }
                if self.agents[entry.2].shortfall(&task.resources).is_none() {
                    best = Some(*entry);
                    break;
                }
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Hands `task` to agent `i`: its slot and resources are taken, its rank updated.
    fn take(&mut self, i: usize, task: &Task) {
        let class = &mut self.classes[self.class_of[i]];
        let agent = &mut self.agents[i];
        class
            .ranked
            .remove(&(Rank(agent.score(self.strategy)), agent.id, i));
        agent.take(&task.resources);
        if agent.free_slots > 0 {
            class
                .ranked
                .insert((Rank(agent.score(self.strategy)), agent.id, i));
        }
    }

    /// Why `task` cannot be placed: a full look at the fleet, done only for tasks that wait.
    fn explain(&self, task: &Task) -> WaitReason {
        let mut capable = 0usize;
        let mut with_room = 0usize;
        let mut short: Option<(String, i128, i128)> = None;
        for agent in &self.agents {
            if !agent.capabilities.covers(&task.required_capabilities) {
                continue;
            }
            capable += 1;
            if agent.free_slots == 0 {
                continue;
            }
            with_room += 1;
            if let Some(s) = agent.shortfall(&task.resources) {
                if short.as_ref().is_none_or(|(_, _, f)| s.2 > *f) {
                    short = Some(s);
                }
            }
        }
        let matching = u32::try_from(capable).unwrap_or(u32::MAX);
        if capable == 0 {
            WaitReason::NoAgentWithAll
        } else if with_room == 0 {
            WaitReason::AllAtCapacity { matching }
        } else {
            let (dimension, need, free) = short.unwrap_or_default();
            WaitReason::AgentsShort {
                matching,
                dimension,
                needs: show_nanos(need),
                most_free: show_nanos(free.max(0)),
            }
        }
    }
}

/// Places as many pending tasks as fit. Tasks that are not pending, whose retry backoff has not
/// elapsed, or whose deadline has passed are ignored. `agents` and `pools` are consumed as capacity is handed out.
pub fn schedule(
    tasks: &[Task],
    agents: Vec<AgentCapacity>,
    mut pools: Pools,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Plan {
    let mut fleet = Fleet::new(agents, policy.strategy);
    let mut plan = Plan::default();
    let ready: Vec<Task> = tasks
        .iter()
        .filter(|t| {
            t.status == crate::task::TaskStatus::Pending
                && t.not_before <= now
                && t.deadline.is_none_or(|d| d > now)
        })
        .cloned()
        .collect();
    for task in queue_order(&ready, now, policy) {
        let refusal = if let Some(missing) = fleet.missing_capability(task) {
            Some(Shortfall {
                reason: WaitReason::MissingCapability {
                    capability: missing.to_string(),
                },
                pool: None,
            })
        } else {
            pools.shortfall(task)
        };
        if let Some(refusal) = refusal {
            plan.unplaced.push(Unplaced {
                task: task.id,
                reason: refusal.reason,
                waits_on: refusal.pool.map(|key| pools.ids[key]),
            });
            continue;
        }
        match fleet.choose_index(task) {
            Some(i) => {
                fleet.take(i, task);
                pools.take(task);
                plan.assignments.push(Assignment {
                    task: task.id,
                    agent: fleet.agents[i].id,
                });
            }
            None => plan.unplaced.push(Unplaced {
                task: task.id,
                reason: fleet.explain(task),
                waits_on: None,
            }),
        }
    }
    plan
}
