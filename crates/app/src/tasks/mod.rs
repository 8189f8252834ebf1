//! Task use cases: submission, reads and operator actions here; the agent work protocol in
//! [`protocol`].

mod protocol;
mod submission;

pub(crate) use protocol::{Filing, Polls};
pub use protocol::{Report, ReportKind, MAX_REPORTS};
pub(crate) use submission::Intake;
pub use submission::{Idempotency, IDEMPOTENCY_WINDOW, MAX_BATCH_TASKS};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::task::{Outcome, TaskError};
use domain::{
    Agent, AgentId, Cursor, Event, EventKind, Limit, Principal, Resource, Role, Task, TaskId,
};
use ports::{Changes, RepoError, TaskQuery};
use serde_json::Value;

use crate::{events, require, Access, AppError, Attempt, Platform};

/// Longest long-poll an agent may ask for.
pub const MAX_WAIT_SECONDS: u32 = 30;
/// Most events a task's history returns.
const HISTORY_LIMIT: u32 = 1000;

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
        require(actor, Access::Change, "tasks")?;
        self.modify_task(id, |task, _, now| {
            task.cancel(now).map_err(transition_error)
        })
        .await
    }

    /// Puts a failed, cancelled or expired task back in the queue with fresh attempts.
    pub async fn retry_task(&self, actor: &Principal, id: TaskId) -> Result<Task, AppError> {
        require(actor, Access::Change, "tasks")?;
        let task = self
            .modify_task(id, |task, _, now| task.retry(now).map_err(transition_error))
            .await?;
        self.wake_for_work();
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
            self.wake_for_room();
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
        note: Option<(&'static str, Value)>,
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
            let transition = Transition {
                before: &before,
                task: &task,
                outcome,
                note: note.clone(),
                now,
            };
            let released = transition.releases();
            let pools = if released {
                let named: Vec<&str> = task
                    .resource_claims
                    .iter()
                    .map(|c| c.resource.as_str())
                    .collect();
                self.pools_named(named).await?
            } else {
                HashMap::new()
            };
            let mut changes = Changes::default();
            record_transition(transition, agent.as_mut(), &pools, &mut changes);
            changes.tasks.push(task.clone());
            let written = self.deps.tasks.save(changes).await;
            let Attempt::Won(stored) =
                Attempt::of(written).map_err(|e| AppError::from_repo("Task", e))?
            else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            if released && !task.resource_claims.is_empty() {
                self.wake_for_room(); // freed capacity may place a waiting task
            }
            task.version += 1;
            Ok(Attempt::Won(task))
        })
        .await
    }

    /// Wakes the scheduler for tasks that became ready to place: worth a pass only when the
    /// last one left an agent room.
    pub(crate) fn wake_for_work(&self) {
        if !self.signals.room.holds() {
            self.signals.work.notify_one();
        }
    }

    /// Wakes the scheduler for capacity that may have come free (or rules that changed):
    /// always worth a pass.
    pub(crate) fn wake_for_room(&self) {
        self.capacity_may_be_free();
        self.signals.work.notify_one();
    }

    /// An event of any replica's: one that may have freed capacity (an attempt ended, an agent
    /// came or changed, a pool changed) lets the next submission here wake the scheduler
    /// again, even if this replica's last pass left no room.
    pub(crate) fn note_capacity(&self, kind: EventKind) {
        let fills = matches!(
            kind,
            EventKind::TaskSubmitted
                | EventKind::TaskAssigned
                | EventKind::TaskStarted
                | EventKind::TaskProgress
                | EventKind::ResourceAllocated
        );
        if !fills {
            self.capacity_may_be_free();
        }
    }

    /// Lets the next submission here wake the scheduler again (see [`Self::note_capacity`]).
    pub(crate) fn capacity_may_be_free(&self) {
        self.signals.room.undone();
    }

    /// After a write of agents: wakes the scheduler if the last pass left out agents another
    /// write held, as this one may have.
    pub(crate) fn agents_released(&self) {
        if self.signals.left_out.undone() {
            self.signals.work.notify_one();
        }
    }

    /// Waits until something may have made scheduling worthwhile.
    pub(crate) async fn work_arrived(&self) {
        self.signals.work.notified().await;
    }
}

/// Adds to `changes` what one transition of a task means: its event (with `note`), the
/// holder's slot given back when an attempt ended (`agent` changed in place, and listed in
/// `changes.agents` if it did), and the release of the attempt's pool allocations, each pool
/// named as `pools` knows it (by the reference the claim gives, see [`Transition::releases`]).
pub(crate) fn record_transition(
    t: Transition<'_>,
    agent: Option<&mut Agent>,
    pools: &HashMap<String, Option<Resource>>,
    changes: &mut Changes,
) {
    let holder = t.before.assigned_agent;
    let releases = t.releases();
    let mut event = events::task_transition(t.task, t.outcome, holder, t.now);
    if let Some((key, value)) = t.note {
        std::sync::Arc::make_mut(&mut event.data)[key] = value;
    }
    changes.events.push(event);
    if let (Some(agent), Some(verdict)) = (agent, verdict(t.outcome)) {
        if t.before.status.is_active() {
            if let Some(change) = agent.release_task(verdict, t.now) {
                changes.events.push(events::agent_status_changed(
                    agent,
                    change,
                    "task finished",
                    t.now,
                ));
            }
            match changes.agents.iter_mut().find(|a| a.id == agent.id) {
                Some(listed) => *listed = agent.clone(),
                None => changes.agents.push(agent.clone()),
            }
        }
    }
    if releases {
        for claim in &t.task.resource_claims {
            changes.events.push(events::resource_claim(
                EventKind::ResourceReleased,
                pools.get(&claim.resource).and_then(Option::as_ref),
                claim,
                t.task,
                holder,
                t.now,
            ));
        }
    }
}

/// One transition of a task, as [`record_transition`] records it.
pub(crate) struct Transition<'a> {
    pub before: &'a Task,
    pub task: &'a Task,
    pub outcome: Outcome,
    /// A key and value added to the event's data.
    pub note: Option<(&'static str, Value)>,
    pub now: DateTime<Utc>,
}

impl Transition<'_> {
    /// Whether the transition ends an attempt, and with it the attempt's pool allocations.
    pub fn releases(&self) -> bool {
        self.before.status.is_active() && !self.task.status.is_active()
    }
}
