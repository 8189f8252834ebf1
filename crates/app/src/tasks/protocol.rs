//! The agent work protocol: an agent starts the tasks it was assigned, reports progress, and
//! completes or fails them, each call naming the attempt it is about; and it long-polls for work.

use std::sync::atomic::Ordering;

use domain::{AgentId, Principal, Task, TaskId, TaskStatus};
use ports::TaskQuery;
use serde_json::{Map, Value};

use super::{calling_agent, noting_stale, transition_error, MAX_WAIT_SECONDS};
use crate::{AppError, Platform};

impl Platform {
    /// How many agents' long polls are waiting for an assignment on this replica now.
    pub fn long_polls_waiting(&self) -> usize {
        self.signals.polling.load(Ordering::Relaxed)
    }

    /// Resolves once at least `count` long polls are waiting on this replica: a readiness
    /// signal for whoever must act only after agents are listening.
    pub async fn until_long_polls_waiting(&self, count: usize) {
        loop {
            let started = self.signals.poll_waits.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if self.long_polls_waiting() >= count {
                return;
            }
            started.await;
        }
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
        loop {
            // Registered before the read, so an assignment made in between still wakes us.
            let assigned = self.signals.assigned.notified();
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
            // Assignments made by another replica do not ring this bell: look again now and then.
            let nap = (deadline - now).min(self.settings.long_poll_recheck);
            self.signals.polling.fetch_add(1, Ordering::Relaxed);
            self.signals.poll_waits.notify_waiters();
            let _ = tokio::time::timeout(nap, assigned).await;
            self.signals.polling.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
