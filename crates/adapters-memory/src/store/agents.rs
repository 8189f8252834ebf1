//! Agents and their keys in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Agent, AgentId, ApiKey, CapabilitySet, NewEvent};
use ports::{AgentQuery, AgentRepository, RepoError, StatusCounts};

use super::{newest_page, MemoryStore};

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

    async fn record_heartbeats(
        &self,
        beats: &[(AgentId, DateTime<Utc>)],
    ) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let mut written = std::collections::HashSet::new();
        for (id, at) in beats {
            if let Some(agent) = state.agents.get_mut(id) {
                if agent.last_heartbeat < *at {
                    agent.last_heartbeat = *at;
                    agent.updated_at = agent.updated_at.max(*at);
                    if written.insert(*id) {
                        agent.version += 1;
                    }
                }
            }
        }
        Ok(written.len() as u64)
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
            if agent.status.is_online() {
                counts.slots += u64::from(agent.max_concurrent_tasks);
            }
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
