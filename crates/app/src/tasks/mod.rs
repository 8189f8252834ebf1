//! Task use cases: submission, reads and operator actions here; the agent work protocol in
//! [`protocol`].

mod protocol;

use chrono::{DateTime, Utc};
use domain::task::{Outcome, TaskError};
use domain::{
    Agent, AgentId, Cursor, Event, EventKind, Limit, NewTask, Principal, Role, Task, TaskId,
};
use ports::IdempotencyRecord;
use ports::{Changes, RepoError, TaskQuery};
use serde_json::Value;
use sha2::Digest;

use crate::{events, AppError, Attempt, Platform};

/// Longest long-poll an agent may ask for.
pub const MAX_WAIT_SECONDS: u32 = 30;
/// Most events a task's history returns.
const HISTORY_LIMIT: u32 = 1000;

/// How long an `Idempotency-Key` is honoured.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// A client's `Idempotency-Key` and a digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

impl Idempotency {
    /// Checks the key (1..=255 visible ASCII characters) and digests the request body.
    pub fn new(key: &str, body: &[u8]) -> Result<Self, String> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters".into());
        }
        Ok(Self {
            key: key.to_owned(),
            fingerprint: hex::encode(sha2::Sha256::digest(body)),
        })
    }
}

/// The agent an agent-role caller is, or why it may not make agent calls.
fn calling_agent(actor: &Principal) -> Result<AgentId, AppError> {
    match (actor.role, actor.agent_id) {
        (Role::Agent, Some(id)) => Ok(id),
        _ => Err(AppError::Forbidden(
            "only the agent a task is assigned to may report on it".into(),
        )),
    }
}

fn transition_error(error: TaskError) -> AppError {
    match error {
        TaskError::Stale(m) | TaskError::InvalidTransition(m) => AppError::Conflict(m),
        TaskError::Invalid(errors) => AppError::Validation(errors),
    }
}

/// [`transition_error`], remembering whether the report came late, from an earlier attempt.
fn noting_stale(error: TaskError, earlier: bool, stale: &std::cell::Cell<bool>) -> AppError {
    stale.set(earlier && matches!(error, TaskError::Stale(_)));
    transition_error(error)
}

/// Whether the agent should count this outcome as a success, a failure, or neither.
fn verdict(outcome: Outcome) -> Option<Option<bool>> {
    match outcome {
        Outcome::Completed => Some(Some(true)),
        Outcome::Failed | Outcome::Requeued => Some(Some(false)),
        // Neither the agent's success nor its failure: its slot is free, its record unchanged.
        Outcome::Cancelled | Outcome::Preempted => Some(None),
        _ => None,
    }
}

impl Platform {
    /// Submits a task and wakes the scheduler. With an `Idempotency-Key` seen in the last 24 h
    /// from the same caller, returns the task that key created instead (the same body), or
    /// refuses (a different body).
    pub async fn submit_task(
        &self,
        actor: &Principal,
        new: NewTask,
        idempotency: Option<Idempotency>,
    ) -> Result<Task, AppError> {
        if !actor.can_operate() {
            return Err(AppError::Forbidden(format!(
                "role {} may not submit tasks",
                actor.role
            )));
        }
        let now = self.deps.clock.now();
        let record = idempotency.map(|i| IdempotencyRecord {
            key: scoped_key(actor, &i.key),
            fingerprint: i.fingerprint,
            task: TaskId(self.deps.ids.new_id()),
            created_at: now,
        });
        if let Some(record) = &record {
            if let Some(task) = self.replay(record).await? {
                return Ok(task);
            }
        }
        self.check_claims(&new).await?;
        let id = record
            .as_ref()
            .map_or_else(|| TaskId(self.deps.ids.new_id()), |r| r.task);
        let task = Task::submit(new, id, now);
        let inserted = self
            .deps
            .tasks
            .insert(
                &task,
                vec![events::task_submitted(&task)],
                record.as_ref().map(|r| (r, IDEMPOTENCY_WINDOW)),
            )
            .await;
        match (inserted, &record) {
            (Ok(stored), _) => {
                self.publish(&stored).await;
                self.signals.work.notify_one();
                Ok(task)
            }
            // The same key won a race a moment ago: answer as if this were the replay.
            (Err(RepoError::Conflict(_)), Some(record)) => {
                self.replay(record).await?.ok_or_else(|| {
                    AppError::Conflict("the Idempotency-Key is in use; try again".into())
                })
            }
            (Err(e), _) => Err(AppError::from_repo("Task", e)),
        }
    }

    /// A client's submission: with an `Idempotency-Key`, the task an earlier submission with
    /// the key created when the key is live and the body the same (a validation error if the
    /// body differs), checked before the body is validated again, so a replay answers as the
    /// original did even once, say, its deadline has passed; otherwise the input is validated
    /// and the task submitted.
    pub async fn submit(
        &self,
        actor: &Principal,
        input: domain::TaskInput,
        idempotency: Option<Idempotency>,
    ) -> Result<Task, AppError> {
        if let Some(idempotency) = &idempotency {
            if !actor.can_operate() {
                return Err(AppError::Forbidden(format!(
                    "role {} may not submit tasks",
                    actor.role
                )));
            }
            let record = IdempotencyRecord {
                key: scoped_key(actor, &idempotency.key),
                fingerprint: idempotency.fingerprint.clone(),
                task: TaskId(uuid::Uuid::nil()),
                created_at: self.deps.clock.now(),
            };
            if let Some(task) = self.replay(&record).await? {
                return Ok(task);
            }
        }
        let new = NewTask::parse(input, self.deps.clock.now())?;
        self.submit_task(actor, new, idempotency).await
    }

    async fn replay(&self, record: &IdempotencyRecord) -> Result<Option<Task>, AppError> {
        let since = self.deps.clock.now() - IDEMPOTENCY_WINDOW;
        let found = self
            .deps
            .tasks
            .find_idempotency(&record.key, since)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        match found {
            None => Ok(None),
            Some(earlier) if earlier.fingerprint == record.fingerprint => self
                .deps
                .tasks
                .get(earlier.task)
                .await
                .map(Some)
                .map_err(|e| AppError::from_repo("Task", e)),
            Some(_) => Err(AppError::Validation(domain::ValidationErrors::single(
                "Idempotency-Key",
                "was already used with a different request body",
            ))),
        }
    }

    /// Forgets `Idempotency-Key`s older than their 24 h window. Returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, AppError> {
        let before = self.deps.clock.now() - IDEMPOTENCY_WINDOW;
        self.deps
            .tasks
            .purge_idempotency(before)
            .await
            .map_err(|e| AppError::from_repo("Task", e))
    }

    /// Lists tasks, newest first.
    pub async fn list_tasks(
        &self,
        actor: &Principal,
        mut query: TaskQuery,
        limit: Limit,
    ) -> Result<crate::Page<Task>, AppError> {
        if !actor.can_read_all() {
            return Err(AppError::Forbidden(format!(
                "role {} may not list tasks",
                actor.role
            )));
        }
        query.limit = limit.get() + 1;
        let rows = self
            .deps
            .tasks
            .list(&query)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        Ok(crate::Page::of(rows, limit, |t| Cursor {
            created_at: t.created_at,
            id: t.id.as_uuid(),
        }))
    }

    /// One task. An agent sees only the tasks assigned to it; others are `NotFound` to it.
    pub async fn get_task(&self, actor: &Principal, id: TaskId) -> Result<Task, AppError> {
        let task = self
            .deps
            .tasks
            .get(id)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        if actor.can_read_all() || task.assigned_agent.is_some_and(|a| actor.is_agent(a)) {
            Ok(task)
        } else {
            Err(AppError::NotFound("Task"))
        }
    }

    /// A task's events, oldest first.
    pub async fn task_history(
        &self,
        actor: &Principal,
        id: TaskId,
    ) -> Result<Vec<Event>, AppError> {
        self.get_task(actor, id).await?;
        self.deps
            .event_log
            .task_events(id, HISTORY_LIMIT)
            .await
            .map_err(|e| AppError::from_repo("Task", e))
    }

    /// Cancels a task: at once if pending; a held task is asked to stop through its agent's
    /// next heartbeat, and ends `cancelled` when the agent reports or its lease runs out.
    pub async fn cancel_task(&self, actor: &Principal, id: TaskId) -> Result<Task, AppError> {
        require_operator(actor)?;
        self.modify_task(id, |task, _, now| {
            task.cancel(now).map_err(transition_error)
        })
        .await
    }

    /// Puts a failed, cancelled or expired task back in the queue with fresh attempts.
    pub async fn retry_task(&self, actor: &Principal, id: TaskId) -> Result<Task, AppError> {
        require_operator(actor)?;
        let task = self
            .modify_task(id, |task, _, now| task.retry(now).map_err(transition_error))
            .await?;
        self.signals.work.notify_one();
        Ok(task)
    }

    /// The tasks an agent holds right now.
    pub async fn held_tasks(&self, agent: AgentId) -> Result<Vec<Task>, AppError> {
        self.deps
            .tasks
            .held_by(agent)
            .await
            .map_err(|e| AppError::from_repo("Task", e))
    }

    /// Ends the attempt of every task an agent holds (it went offline or away): each goes back
    /// to the queue with its next attempt, or fails when none remain.
    pub(crate) async fn release_held(
        &self,
        agent: AgentId,
        reason: &str,
        only_if_offline: bool,
    ) -> Result<usize, AppError> {
        let mut released = 0;
        for task in self.held_tasks(agent).await? {
            let result = self
                .modify_task(task.id, |task, holder, now| {
                    if task.assigned_agent != Some(agent) {
                        return Ok(Outcome::Progress); // moved on meanwhile: nothing to do
                    }
                    if only_if_offline && holder.is_some_and(|a| a.status.is_online()) {
                        return Ok(Outcome::Progress); // it came back meanwhile: keep its work
                    }
                    task.release(reason, now)
                        .ok_or_else(|| AppError::Conflict("task no longer held".into()))
                })
                .await;
            match result {
                Ok(_) => released += 1,
                Err(AppError::Conflict(_) | AppError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if released > 0 {
            self.signals.work.notify_one();
        }
        Ok(released)
    }

    /// Load the task and its holder, decide, save both with a version check, publish.
    /// A transition that ends an attempt releases the agent's slot in the same write.
    pub(crate) async fn modify_task<F>(&self, id: TaskId, decide: F) -> Result<Task, AppError>
    where
        F: FnMut(&mut Task, Option<&Agent>, DateTime<Utc>) -> Result<Outcome, AppError>,
    {
        self.modify_task_noting(id, None, decide).await
    }

    /// [`modify_task`](Self::modify_task), adding `note` to the event's data.
    async fn modify_task_noting<F>(
        &self,
        id: TaskId,
        note: Option<(&str, Value)>,
        decide: F,
    ) -> Result<Task, AppError>
    where
        F: FnMut(&mut Task, Option<&Agent>, DateTime<Utc>) -> Result<Outcome, AppError>,
    {
        // Attempts borrow `decide` in turn; the lock only lends it across them.
        let decide = std::sync::Mutex::new(decide);
        crate::until_won("task", || async {
            let mut task = self
                .deps
                .tasks
                .get(id)
                .await
                .map_err(|e| AppError::from_repo("Task", e))?;
            let holder = task.assigned_agent;
            let mut agent = match holder {
                Some(a) => match self.deps.agents.get(a).await {
                    Ok(agent) => Some(agent),
                    Err(RepoError::NotFound) => None,
                    Err(e) => return Err(AppError::from_repo("Agent", e)),
                },
                None => None,
            };
            let before = task.clone();
            let now = self.deps.clock.now();
            let outcome =
                (decide.lock().unwrap_or_else(|p| p.into_inner()))(&mut task, agent.as_ref(), now)?;
            if task == before {
                return Ok(Attempt::Won(task));
            }
            let mut event = events::task_transition(&task, outcome, holder, now);
            if let Some((key, value)) = &note {
                event.data[*key] = value.clone();
            }
            let mut changes = Changes {
                events: vec![event],
                ..Changes::default()
            };
            if let (Some(agent), Some(verdict)) = (agent.as_mut(), verdict(outcome)) {
                if before.status.is_active() {
                    if let Some(change) = agent.release_task(verdict, now) {
                        changes.events.push(events::agent_status_changed(
                            agent,
                            change,
                            "task finished",
                            now,
                        ));
                    }
                    changes.agents.push(agent.clone());
                }
            }
            // The attempt's pool allocations end with it.
            let released = before.status.is_active() && !task.status.is_active();
            if released {
                for claim in &task.resource_claims {
                    let pool = self
                        .deps
                        .resources
                        .find_resource(&claim.resource)
                        .await
                        .map_err(|e| AppError::from_repo("Resource", e))?;
                    changes.events.push(events::resource_claim(
                        EventKind::ResourceReleased,
                        pool.as_ref(),
                        claim,
                        &task,
                        holder,
                        now,
                    ));
                }
            }
            changes.tasks.push(task.clone());
            let written = self.deps.tasks.save(changes).await;
            let Attempt::Won(stored) =
                Attempt::of(written).map_err(|e| AppError::from_repo("Task", e))?
            else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            if released && !task.resource_claims.is_empty() {
                self.signals.work.notify_one(); // freed capacity may place a waiting task
            }
            task.version += 1;
            Ok(Attempt::Won(task))
        })
        .await
    }

    /// Wakes agents that are long-polling for new assignments.
    pub(crate) fn wake_agents(&self) {
        self.signals.assigned.notify_waiters();
    }

    /// Waits until something may have made scheduling worthwhile.
    pub(crate) async fn work_arrived(&self) {
        self.signals.work.notified().await;
    }
}

fn require_operator(actor: &Principal) -> Result<(), AppError> {
    if actor.can_operate() {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "role {} may not change tasks",
            actor.role
        )))
    }
}

/// An `Idempotency-Key` as stored: scoped to the caller, so two clients can never collide.
fn scoped_key(actor: &Principal, key: &str) -> String {
    format!("{}:{key}", actor.subject)
}
