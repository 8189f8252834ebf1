//! A store whose task repository counts the calls tests care about, for tests that check how
//! often the platform goes to the store.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, NewEvent, Task, TaskId};
use ports::{
    Changes, Decide, DecideWithAgents, IdempotencyRecord, RepoError, Submission, TaskCounts,
    TaskQuery, TaskRepository,
};
use tokio::sync::Notify;

/// The embedded store's tasks, counting writes of new tasks and of reports, and reads of an
/// agent's tasks. The first write of new tasks waits at a gate until the test opens it, as a
/// database round trip would take a while.
pub struct CountingTasks {
    pub inner: Arc<MemoryStore>,
    pub writes: AtomicUsize,
    /// Writes of agents' reports.
    pub report_writes: AtomicUsize,
    pub agent_reads: AtomicUsize,
    /// While set, each pass with pending tasks to place sees no agent, as when another write
    /// holds every serving agent's row: they are counted as left out, as the PostgreSQL store
    /// does.
    pub leave_out: AtomicBool,
    /// Rung by each pass that left agents out so.
    pub left_out_pass: Arc<Notify>,
    /// Rung when the first write reaches the gate.
    pub at_gate: Notify,
    open: AtomicBool,
    opened: Notify,
}

impl CountingTasks {
    /// Lets every write through, now and from now on.
    pub fn open_gate(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn agent_reads(&self) -> usize {
        self.agent_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TaskRepository for CountingTasks {
    async fn insert_all(
        &self,
        submissions: &[Submission],
        key_lifetime: chrono::Duration,
    ) -> Result<Vec<NewEvent>, RepoError> {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
            self.at_gate.notify_one();
            loop {
                let opened = self.opened.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                if self.open.load(Ordering::SeqCst) {
                    break;
                }
                opened.await;
            }
        }
        self.inner.insert_all(submissions, key_lifetime).await
    }
    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        self.inner.find_idempotency(key, since).await
    }
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        self.inner.purge_idempotency(before).await
    }
    async fn purge_ended(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, RepoError> {
        self.inner.purge_ended(before, limit).await
    }
    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError> {
        self.inner.get_many(ids).await
    }
    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        if query.agent.is_some() {
            self.agent_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.list(query).await
    }
    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        self.inner.save(changes).await
    }
    async fn update_with_agents(
        &self,
        agents: &[AgentId],
        tasks: &[TaskId],
        decide: DecideWithAgents,
    ) -> Result<Vec<NewEvent>, RepoError> {
        self.report_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.update_with_agents(agents, tasks, decide).await
    }
    async fn schedule(
        &self,
        now: DateTime<Utc>,
        size: ports::PassSize,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        if !self.leave_out.load(Ordering::SeqCst) {
            return self.inner.schedule(now, size, policy, decide).await;
        }
        let rung = self.left_out_pass.clone();
        let decide: Decide = Box::new(move |mut snapshot| {
            if !snapshot.pending.is_empty() && !snapshot.agents.is_empty() {
                snapshot.left_out += snapshot.agents.len();
                snapshot.agents.clear();
                snapshot.held.clear();
                rung.notify_one();
            }
            decide(snapshot)
        });
        self.inner.schedule(now, size, policy, decide).await
    }
    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.lease_expired(now, limit).await
    }
    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.past_deadline(now, limit).await
    }
    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        self.agent_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.held_by(agent).await
    }
    async fn count_by_status(&self) -> Result<TaskCounts, RepoError> {
        self.inner.count_by_status().await
    }
    async fn queue_depth(&self) -> Result<[u64; 10], RepoError> {
        self.inner.queue_depth().await
    }
    async fn outcomes(
        &self,
        agents: &[AgentId],
        since: DateTime<Utc>,
    ) -> Result<Vec<ports::AgentOutcomes>, RepoError> {
        self.inner.outcomes(agents, since).await
    }
    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.waiting_for_capabilities(limit).await
    }
}

/// A platform on `store` (with `bus`) whose task repository counts; its gate open.
pub fn counting_platform(
    store: &Arc<MemoryStore>,
    bus: &Arc<MemoryBus>,
    settings: Settings,
) -> (Platform, Arc<CountingTasks>) {
    gated_platform(store, bus, settings, true)
}

/// [`counting_platform`], its gate open or not.
pub fn gated_platform(
    store: &Arc<MemoryStore>,
    bus: &Arc<MemoryBus>,
    settings: Settings,
    gate_open: bool,
) -> (Platform, Arc<CountingTasks>) {
    let tasks = Arc::new(CountingTasks {
        inner: store.clone(),
        writes: AtomicUsize::new(0),
        report_writes: AtomicUsize::new(0),
        agent_reads: AtomicUsize::new(0),
        leave_out: AtomicBool::new(false),
        left_out_pass: Arc::new(Notify::new()),
        at_gate: Notify::new(),
        open: AtomicBool::new(gate_open),
        opened: Notify::new(),
    });
    let mut deps = Dependencies::on_store(
        store.clone(),
        bus.clone(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    deps.tasks = tasks.clone();
    (Platform::new(deps, settings), tasks)
}
