//! Tasks in memory, and the scheduling pass under the store's lock.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::scheduler::Held;
use domain::{Agent, AgentId, NewEvent, Task, TaskId};
use ports::{
    AgentOutcomes, Changes, Decide, DecideWithAgents, IdempotencyRecord, PassSize, RepoError,
    SchedulingSnapshot, SnapshotRows, Submission, TaskCounts, TaskQuery, TaskRepository,
};

use super::MemoryStore;

#[async_trait]
impl TaskRepository for MemoryStore {
    async fn insert_all(
        &self,
        submissions: &[Submission],
        key_lifetime: chrono::Duration,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for submission in submissions {
            for task in &submission.tasks {
                if state.tasks.contains_key(&task.id) || !ids.insert(task.id) {
                    return Err(RepoError::Conflict(format!("task {} exists", task.id)));
                }
            }
            if let Some(record) = &submission.idempotency {
                let live = state
                    .idempotency
                    .get(&record.key)
                    .is_some_and(|r| r.created_at >= record.created_at - key_lifetime);
                if live || !keys.insert(record.key.as_str()) {
                    return Err(RepoError::Conflict("idempotency key in use".into()));
                }
            }
        }
        let mut events = Vec::new();
        for submission in submissions {
            if let Some(record) = &submission.idempotency {
                state.idempotency.insert(record.key.clone(), record.clone());
            }
            for task in &submission.tasks {
                let mut stored = task.clone();
                stored.version = 0;
                state.put_task(stored);
            }
            events.extend(submission.events.iter().cloned());
        }
        Ok(state.append(events))
    }

    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        self.lock()
            .tasks
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        ids.iter()
            .map(|id| state.tasks.get(id).cloned().ok_or(RepoError::NotFound))
            .collect()
    }

    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        Ok(self
            .lock()
            .idempotency
            .get(key)
            .filter(|r| r.created_at >= since)
            .cloned())
    }

    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let count = state.idempotency.len();
        state.idempotency.retain(|_, r| r.created_at >= before);
        Ok((count - state.idempotency.len()) as u64)
    }

    async fn purge_ended(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let ended: Vec<TaskId> = state
            .finished
            .range(..(before, TaskId(uuid::Uuid::nil())))
            .map(|(_, id)| *id)
            .filter(|id| {
                let execution = state.tasks.get(id).and_then(|t| t.execution_id);
                !execution.is_some_and(|x| state.running(domain::ExecutionId(x)))
            })
            .take(limit as usize)
            .collect();
        for id in &ended {
            state.remove_task(*id);
        }
        Ok(ended.len() as u64)
    }

    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        // Walked newest first and stopped at a full page, as PostgreSQL walks its index.
        let page = state
            .newest_tasks(query.after)
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .filter(|t| query.priority.is_none_or(|p| t.priority == p))
            .filter(|t| {
                query
                    .capability
                    .as_ref()
                    .is_none_or(|c| t.required_capabilities.contains(c))
            })
            .filter(|t| query.agent.is_none_or(|a| t.assigned_agent == Some(a)))
            .filter(|t| query.workflow_id.is_none_or(|w| t.workflow_id == Some(w)))
            .filter(|t| query.execution_id.is_none_or(|e| t.execution_id == Some(e)))
            .take(query.limit as usize)
            .cloned()
            .collect();
        Ok(page)
    }

    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        self.lock().apply(changes)
    }

    async fn update_with_agents(
        &self,
        agents: &[AgentId],
        tasks: &[TaskId],
        decide: DecideWithAgents,
    ) -> Result<Vec<NewEvent>, RepoError> {
        // Under the store's lock throughout: nothing can change in between.
        let mut state = self.lock();
        let named: HashSet<&AgentId> = agents.iter().collect();
        let holders: Vec<Agent> = named
            .into_iter()
            .filter_map(|id| state.agents.get(id).cloned())
            .collect();
        let named: HashSet<&TaskId> = tasks.iter().collect();
        let loaded: Vec<Task> = named
            .into_iter()
            .filter_map(|id| state.tasks.get(id).cloned())
            .collect();
        let held: Vec<&Task> = loaded
            .iter()
            .filter(|t| holders.iter().any(|a| t.assigned_agent == Some(a.id)))
            .collect();
        let rows = SnapshotRows::of(held, &holders);
        let changes = decide(holders, loaded);
        rows.admit(&changes)?;
        state.apply(changes)
    }

    async fn schedule(
        &self,
        now: DateTime<Utc>,
        size: PassSize,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        // The whole pass runs under the store's lock: nothing can change in between.
        let mut state = self.lock();
        let agents: Vec<Agent> = state
            .agents
            .values()
            .filter(|a| a.status.is_serving())
            .cloned()
            .collect();
        let held: Vec<Held> = agents
            .iter()
            .flat_map(|a| state.held_by(a.id))
            .filter_map(Held::of)
            .collect();
        let capacity = domain::scheduler::AgentCapacity::of_all(&agents, &held);
        let free = PassSize::free_slots(&capacity);
        let limit = size.rows(free);
        let ranked = PassSize::ranks(free);
        let ready: Vec<&Task> = state
            .pending()
            .filter(|t| t.not_before <= now && t.deadline.is_none_or(|d| d > now))
            .collect();
        let pending: Vec<Task> = if ranked {
            let head = domain::scheduler::first_in_queue(
                ready.iter().copied(),
                limit as usize,
                now,
                policy,
            );
            let open = PassSize::open_capabilities(&capacity);
            if PassSize::looks_behind(&head, limit, &open) {
                // And the first tasks behind the head that an agent with a slot free can take.
                let taken: std::collections::HashSet<_> = head.iter().map(|t| t.id).collect();
                let behind = domain::scheduler::first_in_queue(
                    ready.iter().copied().filter(|t| {
                        !taken.contains(&t.id)
                            && open.iter().any(|c| c.covers(&t.required_capabilities))
                    }),
                    limit as usize,
                    now,
                    policy,
                );
                domain::scheduler::first_in_queue(
                    head.into_iter().chain(behind),
                    usize::MAX,
                    now,
                    policy,
                )
            } else {
                head
            }
        } else {
            domain::scheduler::head_of_queue(ready, limit as usize)
        }
        .into_iter()
        .cloned()
        .collect();
        let claims = pending.iter().any(|t| !t.resource_claims.is_empty());
        let (resources, claim_holders) = if claims {
            (
                state.resources.values().cloned().collect(),
                state.claim_holders(),
            )
        } else {
            Default::default()
        };
        let snapshot = SchedulingSnapshot {
            pending,
            agents,
            held,
            resources,
            claim_holders,
            asked: limit,
            unranked: !ranked,
            left_out: 0,
        };
        let changes = snapshot.decide(decide)?;
        state.apply(changes)
    }

    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| t.lease_expired(now))
            .collect();
        rows.sort_by_key(|t| (t.lease_expires_at, t.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }

    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state
            .pending()
            .filter(|t| t.deadline.is_some_and(|d| d <= now))
            .collect();
        rows.sort_by_key(|t| (t.deadline, t.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }

    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state.held_by(agent).collect();
        rows.sort_by_key(|t| (t.assigned_at, t.id));
        Ok(rows.into_iter().cloned().collect())
    }

    async fn count_by_status(&self) -> Result<TaskCounts, RepoError> {
        let mut counts = TaskCounts::default();
        for task in self.lock().tasks.values() {
            counts.add(task.status, 1);
        }
        Ok(counts)
    }

    async fn queue_depth(&self) -> Result<[u64; 10], RepoError> {
        let mut depth = [0; 10];
        for task in self.lock().pending() {
            depth[usize::from(task.priority.get()) - 1] += 1;
        }
        Ok(depth)
    }

    async fn outcomes(
        &self,
        agents: &[AgentId],
        since: DateTime<Utc>,
    ) -> Result<Vec<AgentOutcomes>, RepoError> {
        let state = self.lock();
        let mut found = Vec::new();
        for &agent in agents.iter().collect::<HashSet<_>>() {
            let (mut completed, mut failed, mut durations) = (0, 0, Vec::new());
            for task in state.ended_by(agent, since) {
                let Some(ended) = task
                    .completed_at
                    .filter(|_| task.assigned_agent == Some(agent))
                else {
                    continue;
                };
                if task.status == domain::TaskStatus::Completed {
                    completed += 1;
                    if let Some(began) = task.started_at.or(task.assigned_at) {
                        durations
                            .push((ended - began).num_microseconds().unwrap_or(0) as f64 / 1e6);
                    }
                } else if task.status == domain::TaskStatus::Failed {
                    failed += 1;
                }
            }
            if completed + failed > 0 {
                found.push(AgentOutcomes {
                    agent,
                    completed,
                    failed,
                    durations: ports::Durations::of(durations),
                });
            }
        }
        Ok(found)
    }

    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state
            .pending()
            .filter(|t| {
                t.pending_reason
                    .as_ref()
                    .is_some_and(domain::WaitReason::is_capability_gap)
            })
            .collect();
        rows.sort_by_key(|t| (t.created_at, t.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }
}
