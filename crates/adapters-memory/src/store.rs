//! The embedded store: all repositories behind one mutex, so every call is atomic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Agent, AgentId, ApiKey, Event, KeyHash, NewEvent};
use ports::{
    AgentQuery, AgentRepository, ComponentStatus, CredentialRepository, EventLog, HealthCheck,
    RepoError, StatusCounts,
};

/// Events kept in memory; the oldest are dropped beyond this.
const EVENT_RETENTION: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    agents: HashMap<AgentId, Agent>,
    keys: HashMap<KeyHash, ApiKey>,
    events: VecDeque<Event>,
    last_seq: i64,
}

impl State {
    fn append(&mut self, events: Vec<NewEvent>) -> Vec<Event> {
        events
            .into_iter()
            .map(|new| {
                self.last_seq += 1;
                let event = Event::stored(self.last_seq, new);
                if self.events.len() == EVENT_RETENTION {
                    self.events.pop_front();
                }
                self.events.push_back(event.clone());
                event
            })
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
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
    ) -> Result<Vec<Event>, RepoError> {
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
        let mut rows: Vec<&Agent> = state
            .agents
            .values()
            .filter(|a| query.status.is_none_or(|s| a.status == s))
            .filter(|a| {
                query
                    .capability
                    .as_ref()
                    .is_none_or(|c| a.capabilities.contains(c))
            })
            .filter(|a| {
                query
                    .after
                    .is_none_or(|c| c.precedes(a.created_at, a.id.as_uuid()))
            })
            .collect();
        rows.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.id)));
        Ok(rows
            .into_iter()
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn update(&self, agent: &Agent, events: Vec<NewEvent>) -> Result<Vec<Event>, RepoError> {
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
    ) -> Result<Vec<Event>, RepoError> {
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
}

#[async_trait]
impl CredentialRepository for MemoryStore {
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.lock().keys.get(hash).cloned())
    }
}

#[async_trait]
impl EventLog for MemoryStore {
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
}

#[async_trait]
impl HealthCheck for MemoryStore {
    async fn status(&self) -> ComponentStatus {
        ComponentStatus::Embedded
    }
}
