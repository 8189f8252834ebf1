//! The embedded store: all repositories behind one mutex, so every call is atomic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    Agent, AgentId, ApiKey, ApiKeyId, AuditAction, AuditEntry, CapabilitySet, Conflict, ConflictId,
    ConflictStatus, ConflictType, Cursor, Event, KeyHash, NewEvent, Resource, ResourceId, Role,
    Source, Task, TaskId, TaskStatus, User, UserId,
};
use ports::{
    AgentQuery, AgentRepository, Changes, ComponentStatus, ConflictQuery, ConflictRepository,
    CredentialRepository, Decide, EventLog, HealthCheck, IdempotencyRecord, RepoError,
    ResourceRepository, SchedulingSnapshot, StatusCounts, TaskCounts, TaskQuery, TaskRepository,
};

/// Events kept in memory; the oldest are dropped beyond this.
const EVENT_RETENTION: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    agents: HashMap<AgentId, Agent>,
    keys: HashMap<KeyHash, ApiKey>,
    tasks: HashMap<TaskId, Task>,
    resources: HashMap<ResourceId, Resource>,
    conflicts: HashMap<ConflictId, Conflict>,
    users: HashMap<UserId, User>,
    /// The audit trail, oldest first; the oldest are dropped beyond [`EVENT_RETENTION`].
    audit: VecDeque<AuditEntry>,
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Numbered events, oldest first.
    events: VecDeque<Event>,
    /// Committed events waiting for `sequence` to number them, in write order.
    unsequenced: VecDeque<NewEvent>,
    last_seq: i64,
}

impl State {
    fn append(&mut self, events: Vec<NewEvent>) -> Vec<NewEvent> {
        self.unsequenced.extend(events.iter().cloned());
        events
    }

    /// Applies `changes` if every version matches; otherwise changes nothing.
    fn apply(&mut self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        for task in &changes.tasks {
            match self.tasks.get(&task.id) {
                None => return Err(RepoError::NotFound),
                Some(stored) if stored.version != task.version => {
                    return Err(RepoError::Conflict(format!(
                        "task {} changed since it was read",
                        task.id
                    )))
                }
                Some(_) => {}
            }
        }
        for agent in &changes.agents {
            self.check_version(agent)?;
        }
        for pool in &changes.allocated_from {
            self.check_pool(pool)?;
        }
        for pool in &changes.allocated_from {
            if let Some(stored) = self.resources.get_mut(&pool.id) {
                stored.version += 1;
            }
        }
        for task in changes.tasks {
            let mut stored = task;
            stored.version += 1;
            self.tasks.insert(stored.id, stored);
        }
        for agent in changes.agents {
            let mut stored = agent;
            stored.version += 1;
            self.agents.insert(stored.id, stored);
        }
        Ok(self.append(changes.events))
    }

    fn check_pool(&self, pool: &Resource) -> Result<(), RepoError> {
        match self.resources.get(&pool.id) {
            None => Err(RepoError::NotFound),
            Some(stored) if stored.version != pool.version => Err(RepoError::Conflict(format!(
                "resource {} changed since it was read",
                pool.id
            ))),
            Some(_) => Ok(()),
        }
    }

    fn claim_holders(&self) -> Vec<Task> {
        self.tasks
            .values()
            .filter(|t| t.status.is_active() && !t.resource_claims.is_empty())
            .cloned()
            .collect()
    }

    fn check_version(&self, agent: &Agent) -> Result<(), RepoError> {
        match self.agents.get(&agent.id) {
            None => Err(RepoError::NotFound),
            Some(stored) if stored.version != agent.version => Err(RepoError::Conflict(format!(
                "agent {} changed since it was read",
                agent.id
            ))),
            Some(_) => Ok(()),
        }
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

#[async_trait]
impl AgentRepository for MemoryStore {
    async fn insert(
        &self,
        agent: &Agent,
        key: &ApiKey,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if state.agents.contains_key(&agent.id) || state.keys.contains_key(&key.hash) {
            return Err(RepoError::Conflict("duplicate agent or key".into()));
        }
        let mut stored = agent.clone();
        stored.version = 0;
        state.agents.insert(agent.id, stored);
        state.keys.insert(key.hash.clone(), key.clone());
        Ok(state.append(events))
    }

    async fn get(&self, id: AgentId) -> Result<Agent, RepoError> {
        self.lock()
            .agents
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn list(&self, query: &AgentQuery) -> Result<Vec<Agent>, RepoError> {
        let state = self.lock();
        let rows = state
            .agents
            .values()
            .filter(|a| query.status.is_none_or(|s| a.status == s))
            .filter(|a| {
                query
                    .capability
                    .as_ref()
                    .is_none_or(|c| a.capabilities.contains(c))
            });
        Ok(newest_page(
            rows,
            |a| (a.created_at, a.id.as_uuid()),
            query.after,
            query.limit,
        ))
    }

    async fn update(
        &self,
        agent: &Agent,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_version(agent)?;
        let mut stored = agent.clone();
        stored.version += 1;
        state.agents.insert(agent.id, stored);
        Ok(state.append(events))
    }

    async fn delete(
        &self,
        agent: &Agent,
        revoked_at: DateTime<Utc>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_version(agent)?;
        state.agents.remove(&agent.id);
        for key in state.keys.values_mut() {
            if key.agent_id == Some(agent.id) && key.revoked_at.is_none() {
                key.revoked_at = Some(revoked_at);
            }
        }
        Ok(state.append(events))
    }

    async fn heartbeat_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Agent>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Agent> = state
            .agents
            .values()
            .filter(|a| a.status.is_online() && a.last_heartbeat <= cutoff)
            .collect();
        rows.sort_by_key(|a| (a.last_heartbeat, a.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }

    async fn count_by_status(&self) -> Result<StatusCounts, RepoError> {
        let state = self.lock();
        let mut counts = StatusCounts::default();
        for agent in state.agents.values() {
            counts.add(agent.status, 1);
            counts.running_tasks += u64::from(agent.current_tasks);
        }
        Ok(counts)
    }

    async fn capable_exists(&self, capabilities: &CapabilitySet) -> Result<bool, RepoError> {
        Ok(self
            .lock()
            .agents
            .values()
            .any(|a| a.capabilities.covers(capabilities)))
    }
}

/// Newest first: `created_at`, then ID, descending.
/// One page of a list, as every list port method defines it: the rows strictly after `after`
/// in newest-first order (`position` is a row's time and ID), at most `limit` of them.
fn newest_page<'a, T: Clone + 'a>(
    rows: impl Iterator<Item = &'a T>,
    position: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
    after: Option<Cursor>,
    limit: u32,
) -> Vec<T> {
    let mut rows: Vec<&T> = rows
        .filter(|r| {
            let (at, id) = position(r);
            after.is_none_or(|c| c.precedes(at, id))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(position(r)));
    rows.into_iter().take(limit as usize).cloned().collect()
}

#[async_trait]
impl TaskRepository for MemoryStore {
    async fn insert(
        &self,
        task: &Task,
        events: Vec<NewEvent>,
        idempotency: Option<(&IdempotencyRecord, chrono::Duration)>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if state.tasks.contains_key(&task.id) {
            return Err(RepoError::Conflict(format!("task {} exists", task.id)));
        }
        if let Some((record, lifetime)) = idempotency {
            let live = state
                .idempotency
                .get(&record.key)
                .is_some_and(|r| r.created_at >= record.created_at - lifetime);
            if live {
                return Err(RepoError::Conflict("idempotency key in use".into()));
            }
            state.idempotency.insert(record.key.clone(), record.clone());
        }
        let mut stored = task.clone();
        stored.version = 0;
        state.tasks.insert(task.id, stored);
        Ok(state.append(events))
    }

    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        self.lock()
            .tasks
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
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

    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let rows = state
            .tasks
            .values()
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
            .filter(|t| query.execution_id.is_none_or(|e| t.execution_id == Some(e)));
        Ok(newest_page(
            rows,
            |t| (t.created_at, t.id.as_uuid()),
            query.after,
            query.limit,
        ))
    }

    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        self.lock().apply(changes)
    }

    async fn schedule(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        // The whole pass runs under the store's lock: nothing can change in between.
        let mut state = self.lock();
        let ready: Vec<Task> = state
            .tasks
            .values()
            .filter(|t| {
                t.status == TaskStatus::Pending
                    && t.not_before <= now
                    && t.deadline.is_none_or(|d| d > now)
            })
            .cloned()
            .collect();
        let pending: Vec<Task> = domain::scheduler::queue_order(&ready, now, policy)
            .into_iter()
            .take(limit as usize)
            .cloned()
            .collect();
        let agents: Vec<Agent> = state
            .agents
            .values()
            .filter(|a| a.status.is_serving())
            .cloned()
            .collect();
        let held: Vec<Task> = state
            .tasks
            .values()
            .filter(|t| {
                t.status.is_active()
                    && t.assigned_agent.is_some_and(|a| {
                        state.agents.get(&a).is_some_and(|a| a.status.is_serving())
                    })
            })
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
        let changes = decide(SchedulingSnapshot {
            pending,
            agents,
            held,
            resources,
            claim_holders,
        });
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
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Pending && t.deadline.is_some_and(|d| d <= now))
            .collect();
        rows.sort_by_key(|t| (t.deadline, t.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }

    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| t.status.is_active() && t.assigned_agent == Some(agent))
            .collect();
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

    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| {
                t.status == TaskStatus::Pending
                    && t.pending_reason
                        .as_ref()
                        .is_some_and(domain::WaitReason::is_capability_gap)
            })
            .collect();
        rows.sort_by_key(|t| (t.created_at, t.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }
}

#[async_trait]
impl ResourceRepository for MemoryStore {
    async fn insert_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if state.resources.contains_key(&pool.id)
            || state.resources.values().any(|p| p.name == pool.name)
        {
            return Err(RepoError::Conflict(format!(
                "a resource named {} exists",
                pool.name
            )));
        }
        state.resources.insert(pool.id, pool.clone());
        Ok(state.append(events))
    }

    async fn get_resource(&self, id: ResourceId) -> Result<Resource, RepoError> {
        self.lock()
            .resources
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn find_resource(&self, reference: &str) -> Result<Option<Resource>, RepoError> {
        Ok(self
            .lock()
            .resources
            .values()
            .find(|p| p.is_named(reference))
            .cloned())
    }

    async fn list_resources(&self, kind: Option<&str>) -> Result<Vec<Resource>, RepoError> {
        let state = self.lock();
        let rows = state
            .resources
            .values()
            .filter(|p| kind.is_none_or(|k| p.kind == k));
        Ok(newest_page(
            rows,
            |p| (p.created_at, p.id.as_uuid()),
            None,
            u32::MAX,
        ))
    }

    async fn claim_holders(&self) -> Result<Vec<Task>, RepoError> {
        Ok(self.lock().claim_holders())
    }

    async fn update_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_pool(pool)?;
        let mut stored = pool.clone();
        stored.version += 1;
        state.resources.insert(stored.id, stored);
        Ok(state.append(events))
    }

    async fn delete_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_pool(pool)?;
        state.resources.remove(&pool.id);
        Ok(state.append(events))
    }
}

#[async_trait]
impl ConflictRepository for MemoryStore {
    async fn insert_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        let duplicate_cause = conflict.cause.as_ref().is_some_and(|cause| {
            state
                .conflicts
                .values()
                .any(|c| c.is_open() && c.cause.as_ref() == Some(cause))
        });
        if duplicate_cause || state.conflicts.contains_key(&conflict.id) {
            return Err(RepoError::Conflict(
                "an open conflict with this cause exists".into(),
            ));
        }
        state.conflicts.insert(conflict.id, conflict.clone());
        Ok(state.append(events))
    }

    async fn get_conflict(&self, id: ConflictId) -> Result<Conflict, RepoError> {
        self.lock()
            .conflicts
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn list_conflicts(&self, query: &ConflictQuery) -> Result<Vec<Conflict>, RepoError> {
        let state = self.lock();
        let rows = state
            .conflicts
            .values()
            .filter(|c| query.status.is_none_or(|s| c.status == s))
            .filter(|c| query.severity.is_none_or(|s| c.severity == s))
            .filter(|c| query.conflict_type.is_none_or(|t| c.conflict_type == t))
            .filter(|c| query.agent.is_none_or(|a| c.involves(a)));
        Ok(newest_page(
            rows,
            |c| (c.created_at, c.id.as_uuid()),
            query.after,
            query.limit,
        ))
    }

    async fn open_detected(
        &self,
        types: &[ConflictType],
        limit: u32,
    ) -> Result<Vec<Conflict>, RepoError> {
        let state = self.lock();
        let mut rows: Vec<&Conflict> = state
            .conflicts
            .values()
            .filter(|c| {
                c.is_open() && c.source == Source::Detected && types.contains(&c.conflict_type)
            })
            .collect();
        rows.sort_by_key(|c| (c.created_at, c.id));
        Ok(rows.into_iter().take(limit as usize).cloned().collect())
    }

    async fn update_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        match state.conflicts.get(&conflict.id) {
            None => return Err(RepoError::NotFound),
            Some(stored) if stored.version != conflict.version => {
                return Err(RepoError::Conflict(format!(
                    "conflict {} changed since it was read",
                    conflict.id
                )))
            }
            Some(_) => {}
        }
        let mut stored = conflict.clone();
        stored.version += 1;
        state.conflicts.insert(stored.id, stored);
        Ok(state.append(events))
    }

    async fn count_conflicts(&self) -> Result<(u64, u64, u64), RepoError> {
        let state = self.lock();
        let count =
            |s: ConflictStatus| state.conflicts.values().filter(|c| c.status == s).count() as u64;
        Ok((
            count(ConflictStatus::Open),
            count(ConflictStatus::Resolved),
            count(ConflictStatus::Dismissed),
        ))
    }
}

#[async_trait]
impl CredentialRepository for MemoryStore {
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.lock().keys.get(hash).cloned())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state.keys.contains_key(&key.hash) || state.keys.values().any(|k| k.id == key.id) {
            return Err(RepoError::Conflict("duplicate API key".into()));
        }
        state.keys.insert(key.hash.clone(), key.clone());
        Ok(())
    }

    async fn list_api_keys(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let state = self.lock();
        Ok(newest_page(
            state.keys.values(),
            |k| (k.created_at, k.id.as_uuid()),
            after,
            limit,
        ))
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<ApiKey, RepoError> {
        let mut state = self.lock();
        let key = state
            .keys
            .values_mut()
            .find(|k| k.id == id)
            .ok_or(RepoError::NotFound)?;
        key.revoked_at.get_or_insert(at);
        Ok(key.clone())
    }

    async fn insert_first_admin_key(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        let admin = state
            .keys
            .values()
            .any(|k| k.role == Role::Admin && k.is_usable(now))
            || state.users.values().any(|u| u.role == Role::Admin);
        if admin {
            return Ok(false);
        }
        state.keys.insert(key.hash.clone(), key.clone());
        Ok(true)
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let kept = state.audit.len();
        state.audit.retain(|e| e.at >= before);
        Ok((kept - state.audit.len()) as u64)
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<ApiKeyId>, RepoError> {
        Ok(self
            .lock()
            .keys
            .values()
            .filter(|k| k.revoked_at.is_some_and(|at| at > since))
            .map(|k| k.id)
            .collect())
    }

    async fn admin_exists(&self, now: DateTime<Utc>) -> Result<bool, RepoError> {
        let state = self.lock();
        Ok(state
            .keys
            .values()
            .any(|k| k.role == Role::Admin && k.is_usable(now))
            || state.users.values().any(|u| u.role == Role::Admin))
    }

    async fn insert_user(&self, user: &User) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state
            .users
            .values()
            .any(|u| u.username == user.username || u.id == user.id)
        {
            return Err(RepoError::Conflict("username taken".into()));
        }
        state.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, RepoError> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.username == username)
            .cloned())
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, RepoError> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<User, RepoError> {
        let mut state = self.lock();
        let user = state.users.get_mut(&id).ok_or(RepoError::NotFound)?;
        if let Some(role) = role {
            user.role = role;
        }
        if let Some(hash) = password_hash {
            user.password_hash = hash.to_owned();
        }
        user.token_version += 1;
        Ok(user.clone())
    }

    async fn list_users(&self, after: Option<Cursor>, limit: u32) -> Result<Vec<User>, RepoError> {
        let state = self.lock();
        Ok(newest_page(
            state.users.values(),
            |u| (u.created_at, u.id.as_uuid()),
            after,
            limit,
        ))
    }

    async fn delete_user(&self, id: UserId) -> Result<User, RepoError> {
        self.lock().users.remove(&id).ok_or(RepoError::NotFound)
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state.audit.len() >= EVENT_RETENTION {
            state.audit.pop_front();
        }
        state.audit.push_back(entry.clone());
        Ok(())
    }

    async fn audit_entries(
        &self,
        after: Option<Cursor>,
        action: Option<AuditAction>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RepoError> {
        let state = self.lock();
        let rows = state
            .audit
            .iter()
            .filter(|e| action.is_none_or(|a| e.action == a));
        Ok(newest_page(rows, |e| (e.at, e.id), after, limit))
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        let mut state = self.lock();
        let n = state.unsequenced.len().min(limit as usize);
        let waiting: Vec<NewEvent> = state.unsequenced.drain(..n).collect();
        let mut numbered = Vec::with_capacity(n);
        for new in waiting {
            state.last_seq += 1;
            let event = Event::stored(state.last_seq, new);
            if state.events.len() == EVENT_RETENTION {
                state.events.pop_front();
            }
            state.events.push_back(event.clone());
            numbered.push(event);
        }
        Ok(numbered)
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError> {
        let state = self.lock();
        let start = state.events.partition_point(|e| e.seq <= after_seq);
        Ok(state
            .events
            .range(start..)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn task_events(&self, task: TaskId, limit: u32) -> Result<Vec<Event>, RepoError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.task_id == Some(task))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn prune(&self, older_than: DateTime<Utc>, keep_newest: u64) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let mut pruned = 0;
        while state.events.len() > 1 {
            let too_many = state.events.len() as u64 > keep_newest.max(1);
            let too_old = state
                .events
                .front()
                .is_some_and(|e| e.timestamp < older_than);
            if !(too_many || too_old) {
                break;
            }
            state.events.pop_front();
            pruned += 1;
        }
        Ok(pruned)
    }

    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        Ok(self
            .lock()
            .events
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn log_id(&self) -> Result<uuid::Uuid, RepoError> {
        Ok(self.log_id)
    }
}

#[async_trait]
impl HealthCheck for MemoryStore {
    async fn status(&self) -> ComponentStatus {
        ComponentStatus::Embedded
    }
}
