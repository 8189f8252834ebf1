//! The agent work protocol: an agent starts the tasks it was assigned, reports progress, and
//! completes or fails them, each call naming the attempt it is about; and it long-polls for work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use domain::{AgentId, Event, EventKind, NewEvent, Principal, Task, TaskId, TaskStatus};
use ports::TaskQuery;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use super::{calling_agent, noting_stale, transition_error, MAX_WAIT_SECONDS};
use crate::{AppError, Platform};

/// The long polls waiting on this replica, by agent: an assignment wakes only its agent's.
#[derive(Debug, Default)]
pub(crate) struct Polls {
    /// Each waiting agent's bell, and how many of its polls wait on it.
    bells: Mutex<HashMap<AgentId, (Arc<Notify>, usize)>>,
    /// Long polls waiting now.
    waiting: AtomicUsize,
    /// Rung whenever a long poll starts waiting.
    started: Notify,
}

impl Polls {
    /// Wakes the polls of each agent named.
    pub(crate) fn wake(&self, agents: impl IntoIterator<Item = AgentId>) {
        let bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        for agent in agents {
            if let Some((bell, _)) = bells.get(&agent) {
                bell.notify_waiters();
            }
        }
    }

    /// Wakes every waiting poll, to read again: for when assignments may have been missed.
    pub(crate) fn wake_all(&self) {
        let bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        for (bell, _) in bells.values() {
            bell.notify_waiters();
        }
    }

    /// Whether any poll waits now.
    pub(crate) fn any_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// The bell of `agent`, rung by its assignments for as long as the guard lives.
    fn listen(&self, agent: AgentId) -> Listening<'_> {
        let mut bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        let (bell, polls) = bells.entry(agent).or_default();
        *polls += 1;
        Listening {
            polls: self,
            agent,
            bell: bell.clone(),
        }
    }
}

/// One long poll listening for its agent's assignments; it stops when dropped, also when the
/// request is abandoned.
struct Listening<'a> {
    polls: &'a Polls,
    agent: AgentId,
    bell: Arc<Notify>,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let mut bells = self
            .polls
            .bells
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, polls)) = bells.get_mut(&self.agent) {
            *polls -= 1;
            if *polls == 0 {
                bells.remove(&self.agent);
            }
        }
    }
}

/// Counts a poll as waiting while it lives.
struct Waiting<'a>(&'a Polls);

impl<'a> Waiting<'a> {
    fn start(polls: &'a Polls) -> Self {
        polls.waiting.fetch_add(1, Ordering::SeqCst);
        polls.started.notify_waiters();
        Self(polls)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The agents `events` assign tasks to.
fn assignees<'a>(kinds: impl Iterator<Item = (EventKind, Option<AgentId>)> + 'a) -> Vec<AgentId> {
    kinds
        .filter(|(kind, _)| *kind == EventKind::TaskAssigned)
        .filter_map(|(_, agent)| agent)
        .collect()
}

impl Platform {
    /// How many agents' long polls are waiting for an assignment on this replica now.
    pub fn long_polls_waiting(&self) -> usize {
        self.signals.polls.waiting.load(Ordering::SeqCst)
    }

    /// Resolves once at least `count` long polls are waiting on this replica: a readiness
    /// signal for whoever must act only after agents are listening.
    pub async fn until_long_polls_waiting(&self, count: usize) {
        loop {
            let started = self.signals.polls.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if self.long_polls_waiting() >= count {
                return;
            }
            started.await;
        }
    }

    /// Wakes the long polls of the agents that written events assign tasks to.
    pub(crate) fn wake_polls(&self, written: &[NewEvent]) {
        self.signals
            .polls
            .wake(assignees(written.iter().map(|e| (e.kind, e.agent_id))));
    }

    /// Wakes every long poll waiting on this replica, to read again.
    pub(crate) fn wake_all_polls(&self) {
        self.signals.polls.wake_all();
    }

    /// Whether any long poll waits on this replica now.
    pub(crate) fn polls_waiting(&self) -> bool {
        self.signals.polls.any_waiting()
    }

    /// Wakes the long polls of the agents that events from the log or the bus assign tasks
    /// to (made by any replica).
    pub(crate) fn wake_polls_for(&self, events: &[Event]) {
        self.signals
            .polls
            .wake(assignees(events.iter().map(|e| (e.kind, e.agent_id))));
    }

    /// The agent starts the task it was assigned.
    pub async fn start_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
    ) -> Result<Task, AppError> {
        let agent = calling_agent(actor)?;
        self.modify_task(id, |task, _, now| {
            task.start(agent, attempt, now).map_err(transition_error)
        })
        .await
    }

    /// The agent reports it is alive and how far along; the lease is renewed. The returned
    /// task's `cancel_requested` tells the agent whether to stop.
    pub async fn task_heartbeat(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        progress: Option<f64>,
        message: Option<String>,
    ) -> Result<Task, AppError> {
        let agent = calling_agent(actor)?;
        let note = message.map(|m| ("message", Value::String(m)));
        self.modify_task_noting(id, note, |task, _, now| {
            task.heartbeat(agent, attempt, progress, now)
                .map_err(transition_error)
        })
        .await
    }

    /// The agent finished the task.
    pub async fn complete_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        result: Map<String, Value>,
    ) -> Result<Task, AppError> {
        self.end_attempt(actor, id, attempt, |task, agent, now| {
            task.complete(agent, attempt, result.clone(), now)
        })
        .await
    }

    /// The agent gave up on the task.
    pub async fn fail_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        error: &str,
        retryable: bool,
    ) -> Result<Task, AppError> {
        self.end_attempt(actor, id, attempt, |task, agent, now| {
            task.fail(agent, attempt, error, retryable, now)
        })
        .await
    }

    /// The holder ends its attempt (`end` completes or fails it). A report on an attempt that
    /// is no longer current is refused and recorded as a detected state inconsistency; the
    /// capacity an ended attempt frees may place a waiting task.
    async fn end_attempt(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        end: impl Fn(
            &mut Task,
            AgentId,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<domain::task::Outcome, domain::task::TaskError>,
    ) -> Result<Task, AppError> {
        let agent = calling_agent(actor)?;
        let stale = std::cell::Cell::new(false);
        let task = self
            .modify_task(id, |task, _, now| {
                let current = task.attempt;
                end(task, agent, now).map_err(|e| noting_stale(e, attempt < current, &stale))
            })
            .await;
        if stale.get() {
            self.detect_stale_report(agent, id, attempt).await;
        }
        self.wake_for_room();
        task
    }

    /// An agent's tasks, optionally of one status. With `wait`, waits up to that long
    /// (at most [`MAX_WAIT_SECONDS`]) until at least one matches.
    pub async fn agent_tasks(
        &self,
        actor: &Principal,
        agent: AgentId,
        status: Option<TaskStatus>,
        wait: Option<std::time::Duration>,
    ) -> Result<Vec<Task>, AppError> {
        if !actor.can_see_agent(agent) {
            return Err(AppError::NotFound("Agent"));
        }
        self.deps
            .agents
            .get(agent)
            .await
            .map_err(|e| AppError::from_repo("Agent", e))?;
        let wait = wait
            .unwrap_or_default()
            .min(std::time::Duration::from_secs(u64::from(MAX_WAIT_SECONDS)));
        let deadline = tokio::time::Instant::now() + wait;
        let listening = self.signals.polls.listen(agent);
        loop {
            // Listening before the read, so an assignment made in between still wakes us.
            let assigned = listening.bell.notified();
            tokio::pin!(assigned);
            assigned.as_mut().enable();
            let tasks = match status {
                // Without a filter: the work it holds now, not its whole past.
                None => self.held_tasks(agent).await?,
                Some(status) => {
                    let query = TaskQuery {
                        status: Some(status),
                        agent: Some(agent),
                        limit: 1000,
                        ..TaskQuery::default()
                    };
                    self.deps
                        .tasks
                        .list(&query)
                        .await
                        .map_err(|e| AppError::from_repo("Task", e))?
                }
            };
            let now = tokio::time::Instant::now();
            if !tasks.is_empty() || now >= deadline {
                return Ok(tasks);
            }
            // Woken by this agent's assignments, made on this replica or (through the bus or
            // the log, see `follow_assignments`) on another; it reads again only then.
            let _waiting = Waiting::start(&self.signals.polls);
            let _ = tokio::time::timeout(deadline - now, assigned).await;
        }
    }
}
