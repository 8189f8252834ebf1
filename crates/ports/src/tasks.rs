//! The task repository port, including the scheduling pass.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::scheduler::Held;
use domain::{
    Agent, AgentId, Capability, Cursor, Execution, NewEvent, Priority, Resource, Task, TaskId,
    TaskStatus,
};
use uuid::Uuid;

use crate::RepoError;

/// Which tasks to list, and which page.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub priority: Option<Priority>,
    /// Only tasks that require this capability.
    pub capability: Option<Capability>,
    /// Only tasks assigned to this agent (now, or last).
    pub agent: Option<AgentId>,
    pub workflow_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    /// Start after this position (exclusive).
    pub after: Option<Cursor>,
    /// Return at most this many rows.
    pub limit: u32,
}

/// What one agent did in the tasks it last held that ended (completed or failed) in a span
/// of time. Durations run from an attempt's start (its assignment, if it never started) to
/// its end, of completed tasks only; seconds, as PostgreSQL's `percentile_cont` computes them
/// (linear between the nearest two).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentOutcomes {
    pub agent: AgentId,
    pub completed: u64,
    pub failed: u64,
    /// `None` when no task completed.
    pub durations: Option<Durations>,
}

/// Mean and percentiles of durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Durations {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
}

impl Durations {
    /// The mean and percentiles of `seconds`, as PostgreSQL computes them; `None` if empty.
    pub fn of(mut seconds: Vec<f64>) -> Option<Self> {
        if seconds.is_empty() {
            return None;
        }
        seconds.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let position = p * (seconds.len() - 1) as f64;
            let (below, above) = (position.floor() as usize, position.ceil() as usize);
            seconds[below] + (seconds[above] - seconds[below]) * (position - below as f64)
        };
        Some(Self {
            mean: seconds.iter().sum::<f64>() / seconds.len() as f64,
            p50: at(0.5),
            p95: at(0.95),
        })
    }
}

/// How many tasks are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: u64,
    pub assigned: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
}

impl TaskCounts {
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        let slot = match status {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::Assigned => &mut self.assigned,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
            TaskStatus::Expired => &mut self.expired,
        };
        *slot += n;
    }

    pub fn total(&self) -> u64 {
        self.pending
            + self.assigned
            + self.running
            + self.completed
            + self.failed
            + self.cancelled
            + self.expired
    }
}

/// A set of changes written together: each task, agent and execution over the version it was
/// read at, new tasks, and the events they cause. Writing it also moves the executions of the
/// steps whose tasks it ends (see the `workflows` port), except those it carries itself.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub tasks: Vec<Task>,
    pub agents: Vec<Agent>,
    /// Executions, each over the version it was read at.
    pub executions: Vec<Execution>,
    /// Tasks to insert (`version` 0): `Conflict` if an ID is taken.
    pub created: Vec<Task>,
    /// Pools allocated from: only their version is bumped (see `ResourceRepository`), and only
    /// if it still equals the one read; a pool moved or gone since makes the whole write a
    /// `Conflict`.
    pub allocated_from: Vec<Resource>,
    pub events: Vec<NewEvent>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.agents.is_empty()
            && self.executions.is_empty()
            && self.created.is_empty()
            && self.allocated_from.is_empty()
            && self.events.is_empty()
    }
}

/// An `Idempotency-Key` and the tasks it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The key, scoped to the caller that sent it.
    pub key: String,
    /// A digest of the request body it came with.
    pub fingerprint: String,
    /// The tasks the request created, in the order it gave them (one for `POST /tasks`).
    pub tasks: Vec<TaskId>,
    pub created_at: DateTime<Utc>,
}

/// New tasks submitted together, the events their submission causes, and the
/// `Idempotency-Key` that covers them.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub tasks: Vec<Task>,
    pub events: Vec<NewEvent>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// How many pending tasks a scheduling pass reads: a pass can place no more tasks than there
/// are free slots, so a `fitted` pass reads a few times that many (tasks that fit no free agent
/// are read too, and passed over) and never fewer than [`PassSize::LEAST`]; a pass `at_most`
/// reads up to its whole limit, for when the head of the queue may hold more tasks that fit no
/// agent than a fitted pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassSize {
    most: u32,
    fitted: bool,
}

impl PassSize {
    /// Pending tasks a fitted pass reads per free slot.
    pub const PER_FREE_SLOT: u32 = 4;
    /// Fewest pending tasks a fitted pass reads, so the waiting reasons at the head of the queue
    /// stay current while no slot is free.
    pub const LEAST: u32 = 64;

    /// Reads as many as the free slots call for, at most `most`.
    pub fn fitted(most: u32) -> Self {
        Self { most, fitted: true }
    }

    /// Reads up to `most`, whatever the free slots.
    pub fn at_most(most: u32) -> Self {
        Self {
            most,
            fitted: false,
        }
    }

    /// Whether the size follows the free slots.
    pub fn is_fitted(&self) -> bool {
        self.fitted
    }

    /// Whether a pass with `free_slots` between the serving agents ranks the queue to choose
    /// its batch. With no slot free it can place nothing, so it reads the head of the queue in
    /// the order the queue is kept in (priority, then age; see
    /// [`domain::scheduler::head_of_queue`]), which costs a short walk however long the queue
    /// is, where ranking by effective priority (which moves with time) looks at every pending
    /// task. The tasks read still get their waiting reasons.
    pub fn ranks(free_slots: usize) -> bool {
        free_slots > 0
    }

    /// How many pending tasks to read when the serving agents have `free_slots` between them.
    pub fn rows(&self, free_slots: usize) -> u32 {
        if !self.fitted {
            return self.most;
        }
        let wanted = u32::try_from(free_slots)
            .unwrap_or(u32::MAX)
            .saturating_mul(Self::PER_FREE_SLOT)
            .max(Self::LEAST);
        wanted.min(self.most)
    }

    /// The capabilities of each serving agent with a slot free, from their `capacity`
    /// ([`AgentCapacity::of_all`](domain::scheduler::AgentCapacity::of_all)): a pending task
    /// none of them covers cannot be placed by this pass.
    pub fn open_capabilities(
        capacity: &[domain::scheduler::AgentCapacity],
    ) -> Vec<domain::CapabilitySet> {
        capacity
            .iter()
            .filter(|c| c.free_slots > 0)
            .map(|c| c.capabilities.clone())
            .collect()
    }

    /// Whether a ranked pass that read `head` (the first `asked` tasks of the queue) must also
    /// read the first tasks behind it that an agent with a slot free (`open`) could take: when
    /// the head is full and holds a task none of them can. Otherwise a head of tasks that wait
    /// for an absent capability, longer than a pass reads, would keep every task behind it
    /// from ever being placed.
    pub fn looks_behind(
        head: &[impl std::borrow::Borrow<Task>],
        asked: u32,
        open: &[domain::CapabilitySet],
    ) -> bool {
        head.len() >= asked as usize
            && !open.is_empty()
            && head.iter().any(|t| {
                !open
                    .iter()
                    .any(|c| c.covers(&t.borrow().required_capabilities))
            })
    }

    /// The free slots of the serving agents between them, from their `capacity`.
    pub fn free_slots(capacity: &[domain::scheduler::AgentCapacity]) -> usize {
        capacity.iter().map(|c| c.free_slots as usize).sum()
    }
}

/// What one scheduling pass sees.
#[derive(Debug, Clone, Default)]
pub struct SchedulingSnapshot {
    /// Pending tasks whose backoff has elapsed: the first in effective-priority order, or the
    /// head of the queue as it is kept when `unranked` (see [`PassSize::ranks`]).
    pub pending: Vec<Task>,
    /// `pending` is the head of the queue, not chosen by rank: the pass found no free slot. It
    /// places nothing (a slot freed since the slots were counted is for the next pass, which
    /// ranks).
    pub unranked: bool,
    /// Agents that are serving (idle, active or busy).
    pub agents: Vec<Agent>,
    /// The assigned and running tasks of those agents, as their capacity sees them.
    pub held: Vec<Held>,
    /// When a pending task claims a pool: every pool, and every assigned or running task that
    /// claims any (whichever agent holds it). Empty otherwise.
    pub resources: Vec<Resource>,
    pub claim_holders: Vec<Task>,
    /// How many pending tasks the store asked for (see [`PassSize`]): `pending` holds fewer
    /// when fewer were ready, and up to twice as many when the pass also read behind the head
    /// (see [`PassSize::looks_behind`]).
    pub asked: u32,
    /// Serving agents left out because another write held them at the moment (their capacity,
    /// and what they could take, are for a later pass to see).
    pub left_out: usize,
}

impl SchedulingSnapshot {
    /// What this snapshot holds, to check a pass's changes against once the snapshot has been
    /// handed to its decision.
    fn rows(&self) -> SnapshotRows {
        SnapshotRows {
            tasks: self
                .pending
                .iter()
                .chain(&self.claim_holders)
                .map(|t| t.id)
                .chain(self.held.iter().map(|h| h.task))
                .collect(),
            agents: self.agents.iter().map(|a| a.id).collect(),
            pools: self.resources.iter().map(|p| p.id).collect(),
        }
    }

    /// Hands the snapshot to `decide` and returns its changes, refused (`Internal`, see
    /// [`SnapshotRows::admit`]) when they touch a row the snapshot does not hold: the one way a
    /// store runs a pass's decision.
    pub fn decide(self, decide: Decide) -> Result<Changes, RepoError> {
        let read = self.rows();
        let changes = decide(self);
        read.admit(&changes)?;
        Ok(changes)
    }
}

/// The rows a scheduling pass read, and so the only ones it may write.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRows {
    tasks: std::collections::HashSet<domain::TaskId>,
    agents: std::collections::HashSet<AgentId>,
    pools: std::collections::HashSet<domain::ResourceId>,
}

impl SnapshotRows {
    /// The rows of `tasks` and `agents` (and no pool).
    pub fn of<'a>(
        tasks: impl IntoIterator<Item = &'a Task>,
        agents: impl IntoIterator<Item = &'a Agent>,
    ) -> Self {
        Self {
            tasks: tasks.into_iter().map(|t| t.id).collect(),
            agents: agents.into_iter().map(|a| a.id).collect(),
            pools: Default::default(),
        }
    }

    /// `Internal` when `changes` touch a task, agent or pool the pass did not read, or carry an
    /// execution or a new task: nothing it did not lock may be written by it. A store checks this before it writes a pass.
    pub fn admit(&self, changes: &Changes) -> Result<(), RepoError> {
        // Executions and new tasks are never read by a pass or held for reports: a write
        // that ends a step's task moves its execution itself.
        let outside = !changes.executions.is_empty()
            || !changes.created.is_empty()
            || changes.tasks.iter().any(|t| !self.tasks.contains(&t.id))
            || changes.agents.iter().any(|a| !self.agents.contains(&a.id))
            || changes
                .allocated_from
                .iter()
                .any(|p| !self.pools.contains(&p.id));
        if outside {
            Err(RepoError::Internal(
                "a scheduling pass may write only what it read".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// The decision a scheduling pass takes on its snapshot.
pub type Decide = Box<dyn FnOnce(SchedulingSnapshot) -> Changes + Send>;

/// What agents' reports change, decided on those of the agents and of the tasks they name that
/// exist, as they are when locked.
pub type DecideWithAgents = Box<dyn FnOnce(Vec<Agent>, Vec<Task>) -> Changes + Send>;

/// Where tasks live.
#[async_trait]
pub trait TaskRepository: Send + Sync {
    /// Stores the tasks (`version` 0), events and idempotency records of every submission in
    /// one transaction, all or nothing; several requests' submissions share one commit this
    /// way. `Conflict` if a task with one of these IDs exists (or two share one), if a key is
    /// recorded already and its record is not older than the new record's `created_at` minus
    /// `key_lifetime` (an older record is replaced), or if two submissions carry one key.
    /// Nothing is written on an error. Returns the events, as stored.
    async fn insert_all(
        &self,
        submissions: &[Submission],
        key_lifetime: chrono::Duration,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// [`insert_all`](Self::insert_all) of one submission of one task.
    async fn insert(
        &self,
        task: &Task,
        events: Vec<NewEvent>,
        idempotency: Option<(&IdempotencyRecord, chrono::Duration)>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let lifetime = idempotency.map_or(chrono::Duration::zero(), |(_, l)| l);
        let submission = Submission {
            tasks: vec![task.clone()],
            events,
            idempotency: idempotency.map(|(r, _)| r.clone()),
        };
        self.insert_all(&[submission], lifetime).await
    }

    /// The record of `key` if it was made at or after `since`.
    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError>;

    /// Deletes the records made before `before`; returns how many.
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;

    /// Deletes at most `limit` tasks that ended (completed, failed, cancelled or expired)
    /// before `before`, those that ended first first; returns how many. Tasks that have not
    /// ended are never deleted, however old, nor the tasks of a workflow execution still
    /// running (its later steps may read them).
    async fn purge_ended(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, RepoError>;

    /// The task with this ID. `NotFound` if there is none.
    async fn get(&self, id: TaskId) -> Result<Task, RepoError>;

    /// The tasks with these IDs, in the order asked for. `NotFound` if one is missing.
    async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError>;

    /// Tasks matching the query, newest first (`created_at` then `id`, descending), strictly after
    /// `query.after`, at most `query.limit`.
    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError>;

    /// Writes every task and agent in `changes` if each stored `version` still equals the one it
    /// was read at (bumping it by one), and stores the events; one transaction.
    /// `NotFound` if one is gone, `Conflict` if one moved: then nothing is written.
    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError>;

    /// Loads those of `agents` and of `tasks` that exist; holds those agents and the named
    /// tasks assigned to one of them against every other writer until this call ends (the
    /// other tasks named are read as they are); calls `decide` once with them, and writes the
    /// changes it returns (each row over the version read, bumping it), with their events, in
    /// one transaction. So agents' reports do not lose races to other writers of their rows,
    /// and the reports of many agents share one commit. Changes to a row not held are refused
    /// (`Internal`, see [`SnapshotRows::admit`]) and nothing is written.
    async fn update_with_agents(
        &self,
        agents: &[AgentId],
        tasks: &[TaskId],
        decide: DecideWithAgents,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// One scheduling pass. Loads a snapshot (as many pending tasks ready at `now` as `size`
    /// asks for the free slots of the serving agents, those that come first in the `policy`'s
    /// effective-priority order, skipping those past their deadline; the serving agents (but
    /// those another write holds at the moment, left to the next pass) and the tasks they
    /// hold; the pools and their holders when a pending task
    /// claims one), calls `decide` once with it, and writes the changes it returns, with their
    /// events, in the same transaction. Changes to a task, agent or pool not in the snapshot
    /// are refused (`Internal`, see [`SnapshotRows::admit`]) and nothing is written. Passes
    /// never overlap, on this replica or any other sharing the store, and the snapshot's rows
    /// cannot change before the write, so the write never loses a race.
    async fn schedule(
        &self,
        now: DateTime<Utc>,
        size: PassSize,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// Assigned or running tasks whose lease ran out at or before `now`, at most `limit`.
    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError>;

    /// Pending tasks whose deadline is at or before `now`, at most `limit`.
    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError>;

    /// The assigned and running tasks of one agent, oldest assignment first.
    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError>;

    /// How many tasks are in each status.
    async fn count_by_status(&self) -> Result<TaskCounts, RepoError>;

    /// Pending tasks by priority: `[0]` counts priority 1, `[9]` priority 10. Reads only the
    /// pending tasks, so it stays cheap however many have ended.
    async fn queue_depth(&self) -> Result<[u64; 10], RepoError>;

    /// For each of `agents` that holds (as the last holder) a task that ended, completed or
    /// failed, at or after `since`: how many of each, and the durations of the completed
    /// ones. Agents without such tasks are left out; the order is unspecified.
    async fn outcomes(
        &self,
        agents: &[AgentId],
        since: DateTime<Utc>,
    ) -> Result<Vec<AgentOutcomes>, RepoError>;

    /// Pending tasks that wait because no online agent has a capability they need (their
    /// `pending_reason` is a capability gap), oldest first (`created_at` then `id`), at most
    /// `limit`.
    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError>;
}
