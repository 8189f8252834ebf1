//! The embedded store: all repositories behind one mutex, so every call is atomic. One module
//! per port, as in the PostgreSQL adapter; the state they share, and the version checks every
//! write makes, are here.

mod agents;
mod conflicts;
mod credentials;
mod events;
mod resources;
mod tasks;
mod workflows;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    Agent, AgentId, ApiKey, AuditEntry, Conflict, ConflictId, Cursor, Event, Execution,
    ExecutionId, KeyHash, NewEvent, Resource, ResourceId, Task, TaskId, User, UserId, Workflow,
    WorkflowId,
};
use ports::{Changes, ComponentStatus, HealthCheck, IdempotencyRecord, RepoError};

/// Events kept in memory; the oldest are dropped beyond this.
pub(crate) const EVENT_RETENTION: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct State {
    agents: HashMap<AgentId, Agent>,
    keys: HashMap<KeyHash, ApiKey>,
    tasks: HashMap<TaskId, Task>,
    /// The assigned and running tasks of each agent, and the pending tasks: indexes kept by
    /// [`State::put_task`], as is `ended`.
    held: HashMap<AgentId, BTreeSet<TaskId>>,
    pending: std::collections::HashSet<TaskId>,
    /// The completed and failed tasks of each agent that held them last, by when they ended.
    ended: HashMap<AgentId, BTreeSet<(DateTime<Utc>, TaskId)>>,
    /// Every task that ended, by when: what retention deletes from.
    finished: BTreeSet<(DateTime<Utc>, TaskId)>,
    /// Every task by when it was created: the order lists page in, newest first.
    created: BTreeSet<(DateTime<Utc>, TaskId)>,
    resources: HashMap<ResourceId, Resource>,
    conflicts: HashMap<ConflictId, Conflict>,
    users: HashMap<UserId, User>,
    workflows: HashMap<WorkflowId, Workflow>,
    executions: HashMap<ExecutionId, Execution>,
    /// The audit trail, oldest first; the oldest are dropped beyond [`EVENT_RETENTION`].
    audit: VecDeque<AuditEntry>,
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Numbered events, oldest first.
    events: VecDeque<Event>,
    last_seq: i64,
    /// The highest `seq` `sequence` has handed over.
    handed: i64,
    /// What each replica announced of its settings (only this process's, embedded).
    replicas: HashMap<uuid::Uuid, ports::ReplicaSettings>,
}

/// Whether a task in `status` ended in a way that counts for its agent's record.
fn ended(status: domain::TaskStatus) -> bool {
    matches!(
        status,
        domain::TaskStatus::Completed | domain::TaskStatus::Failed
    )
}

/// Moves an entry of an index by agent from where it was (agent and key) to where it is now.
fn reindex<K: Ord>(
    index: &mut HashMap<AgentId, BTreeSet<K>>,
    before: Option<(AgentId, K)>,
    now: Option<(AgentId, K)>,
) {
    if let Some((agent, key)) = before {
        if let Some(entries) = index.get_mut(&agent) {
            entries.remove(&key);
            if entries.is_empty() {
                index.remove(&agent);
            }
        }
    }
    if let Some((agent, key)) = now {
        index.entry(agent).or_default().insert(key);
    }
}

impl State {
    /// Stores a task, keeping the indexes of tasks true: the one way tasks are written.
    fn put_task(&mut self, task: Task) {
        let holder = |t: &Task| t.assigned_agent.filter(|_| t.status.is_active());
        let finisher = |t: &Task| {
            let at = t.completed_at.filter(|_| ended(t.status))?;
            Some((t.assigned_agent?, (at, t.id)))
        };
        let before = self.tasks.get(&task.id);
        let (held_before, ended_before) = (before.and_then(holder), before.and_then(finisher));
        let created = |t: &Task| (t.created_at, t.id);
        let created_before = before.map(created);
        if created_before != Some(created(&task)) {
            if let Some(key) = created_before {
                self.created.remove(&key);
            }
            self.created.insert(created(&task));
        }
        let done = |t: &Task| {
            t.completed_at
                .filter(|_| t.status.is_terminal())
                .map(|at| (at, t.id))
        };
        if let Some(key) = before.and_then(done) {
            self.finished.remove(&key);
        }
        if let Some(key) = done(&task) {
            self.finished.insert(key);
        }
        reindex(
            &mut self.held,
            held_before.map(|a| (a, task.id)),
            holder(&task).map(|a| (a, task.id)),
        );
        reindex(&mut self.ended, ended_before, finisher(&task));
        if task.status == domain::TaskStatus::Pending {
            self.pending.insert(task.id);
        } else {
            self.pending.remove(&task.id);
        }
        self.tasks.insert(task.id, task);
        debug_assert_eq!(self.created.len(), self.tasks.len());
    }

    /// Removes a task and its entries in the indexes.
    fn remove_task(&mut self, id: TaskId) {
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        self.created.remove(&(task.created_at, id));
        if let Some(at) = task.completed_at {
            self.finished.remove(&(at, id));
        }
        if let Some(agent) = task.assigned_agent {
            reindex(&mut self.held, Some((agent, id)), None);
            if let Some(at) = task.completed_at {
                reindex(&mut self.ended, Some((agent, (at, id))), None);
            }
        }
        self.pending.remove(&id);
        debug_assert_eq!(self.created.len(), self.tasks.len());
    }

    /// The completed and failed tasks `agent` held last that ended at or after `since`.
    fn ended_by(&self, agent: AgentId, since: DateTime<Utc>) -> impl Iterator<Item = &Task> {
        self.ended
            .get(&agent)
            .into_iter()
            .flat_map(move |ended| ended.range((since, TaskId(uuid::Uuid::nil()))..))
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// The pending tasks.
    fn pending(&self) -> impl Iterator<Item = &Task> {
        self.pending.iter().filter_map(|id| self.tasks.get(id))
    }

    /// The tasks created before `after` (all without it), newest first: those the cursor
    /// [`precedes`](domain::Cursor::precedes).
    fn newest_tasks(&self, after: Option<domain::Cursor>) -> impl Iterator<Item = &Task> {
        let end = match after {
            Some(c) => std::ops::Bound::Excluded((c.created_at, TaskId(c.id))),
            None => std::ops::Bound::Unbounded,
        };
        self.created
            .range((std::ops::Bound::Unbounded, end))
            .rev()
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// The assigned and running tasks of `agent`.
    fn held_by(&self, agent: AgentId) -> impl Iterator<Item = &Task> {
        self.held
            .get(&agent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Numbers `events` and stores them: a write's last step, under the same lock as its change.
    fn append(&mut self, events: Vec<NewEvent>) -> Vec<NewEvent> {
        for new in &events {
            self.last_seq += 1;
            if self.events.len() == EVENT_RETENTION {
                self.events.pop_front();
            }
            self.events
                .push_back(Event::stored(self.last_seq, new.clone()));
        }
        events
    }

    /// Applies `changes` if every version matches, with what they mean for the executions of
    /// the steps they end (see [`State::follow`]); otherwise changes nothing.
    fn apply(&mut self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        for task in &changes.tasks {
            unchanged(
                "task",
                task.id,
                task.version,
                self.tasks.get(&task.id).map(|t| t.version),
            )?;
        }
        for agent in &changes.agents {
            self.check_version(agent)?;
        }
        for execution in &changes.executions {
            self.check_execution(execution)?;
        }
        self.check_new_tasks(&changes.created)?;
        for pool in &changes.allocated_from {
            // A pool gone since the pass read it has moved on too: the pass reads again.
            self.check_pool(pool).map_err(|e| match e {
                RepoError::NotFound => RepoError::Conflict(format!("resource {} is gone", pool.id)),
                other => other,
            })?;
        }
        let follow = self.follow(&changes);
        self.check_new_tasks(&follow.created)?;
        for pool in &changes.allocated_from {
            if let Some(stored) = self.resources.get_mut(&pool.id) {
                stored.version += 1;
            }
        }
        for task in changes.tasks.into_iter().chain(follow.cancelled) {
            let mut stored = task;
            stored.version += 1;
            self.put_task(stored);
        }
        for task in changes.created.into_iter().chain(follow.created) {
            let mut stored = task;
            stored.version = 0;
            self.put_task(stored);
        }
        for agent in changes.agents {
            let mut stored = agent;
            stored.version += 1;
            self.agents.insert(stored.id, stored);
        }
        for execution in changes.executions.into_iter().chain(follow.executions) {
            let mut stored = execution;
            stored.version += 1;
            self.executions.insert(stored.id, stored);
        }
        let mut events = changes.events;
        events.extend(follow.events);
        Ok(self.append(events))
    }

    /// `Conflict` if one of `tasks` has the ID of a stored task, or of another of them.
    fn check_new_tasks(&self, tasks: &[Task]) -> Result<(), RepoError> {
        let mut ids = std::collections::HashSet::new();
        match tasks
            .iter()
            .find(|t| self.tasks.contains_key(&t.id) || !ids.insert(t.id))
        {
            Some(t) => Err(RepoError::Conflict(format!("task {} exists", t.id))),
            None => Ok(()),
        }
    }

    fn check_pool(&self, pool: &Resource) -> Result<(), RepoError> {
        let stored = self.resources.get(&pool.id).map(|p| p.version);
        unchanged("resource", pool.id, pool.version, stored)
    }

    fn claim_holders(&self) -> Vec<Task> {
        self.tasks
            .values()
            .filter(|t| t.status.is_active() && !t.resource_claims.is_empty())
            .cloned()
            .collect()
    }

    fn check_version(&self, agent: &Agent) -> Result<(), RepoError> {
        let stored = self.agents.get(&agent.id).map(|a| a.version);
        unchanged("agent", agent.id, agent.version, stored)
    }
}

/// The version check every write makes: `NotFound` when nothing is stored, `Conflict` when what
/// is stored has moved on from the version the writer read.
pub(crate) fn unchanged(
    what: &str,
    id: impl std::fmt::Display,
    read: i64,
    stored: Option<i64>,
) -> Result<(), RepoError> {
    match stored {
        None => Err(RepoError::NotFound),
        Some(version) if version != read => Err(RepoError::Conflict(format!(
            "{what} {id} changed since it was read"
        ))),
        Some(_) => Ok(()),
    }
}

/// The in-process store. Nothing survives a restart.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Names this store's log; random, as no other process shares it.
    log_id: uuid::Uuid,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            log_id: uuid::Uuid::new_v4(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: every method
        // validates before it mutates, so the state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Newest first: `created_at`, then ID, descending.
/// One page of a list, as every list port method defines it: the rows strictly after `after`
/// in newest-first order (`position` is a row's time and ID), at most `limit` of them.
pub(crate) fn newest_page<'a, T: Clone + 'a>(
    rows: impl Iterator<Item = &'a T>,
    position: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
    after: Option<Cursor>,
    limit: u32,
) -> Vec<T> {
    let limit = limit as usize;
    let mut rows: Vec<&T> = rows
        .filter(|r| {
            let (at, id) = position(r);
            after.is_none_or(|c| c.precedes(at, id))
        })
        .collect();
    // Only the page is sorted: the newest `limit` are selected first (rows of one position, which
    // IDs make unique, would come in any order).
    let newest_first = |r: &&T| std::cmp::Reverse(position(r));
    if limit < rows.len() {
        if let Some(last) = limit.checked_sub(1) {
            rows.select_nth_unstable_by_key(last, newest_first);
        }
        rows.truncate(limit);
    }
    rows.sort_unstable_by_key(newest_first);
    rows.into_iter().cloned().collect()
}

#[async_trait]
impl HealthCheck for MemoryStore {
    async fn status(&self) -> ComponentStatus {
        ComponentStatus::Embedded
    }
}

#[async_trait]
impl ports::ReplicaRegistry for MemoryStore {
    async fn announce(
        &self,
        mine: &ports::ReplicaSettings,
        since: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<Vec<ports::ReplicaSettings>, RepoError> {
        let mut state = self.lock();
        state.replicas.retain(|_, r| r.seen_at >= forget_before);
        state.replicas.insert(mine.replica, mine.clone());
        let mut others: Vec<ports::ReplicaSettings> = state
            .replicas
            .values()
            .filter(|r| r.replica != mine.replica && r.seen_at >= since)
            .cloned()
            .collect();
        others.sort_by_key(|r| r.replica);
        Ok(others)
    }
}
