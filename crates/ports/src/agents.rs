//! The agent repository port.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Agent, AgentId, AgentStatus, ApiKey, Capability, CapabilitySet, Cursor, NewEvent};

use crate::RepoError;

/// Which agents to list, and which page.
#[derive(Debug, Clone, Default)]
pub struct AgentQuery {
    pub status: Option<AgentStatus>,
    /// Only agents that have this capability.
    pub capability: Option<Capability>,
    /// Start after this position (exclusive).
    pub after: Option<Cursor>,
    /// Return at most this many rows.
    pub limit: u32,
}

/// How many agents are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub idle: u64,
    pub active: u64,
    pub busy: u64,
    pub draining: u64,
    pub offline: u64,
    pub suspended: u64,
    /// Tasks currently held by agents (sum of `current_tasks`).
    pub running_tasks: u64,
    /// Tasks the online agents (idle, active, busy or draining) may hold at once (sum of
    /// their `max_concurrent_tasks`).
    pub slots: u64,
}

impl StatusCounts {
    pub fn total(&self) -> u64 {
        self.idle + self.active + self.busy + self.draining + self.offline + self.suspended
    }

    /// Agents that are online (serving or draining).
    pub fn online(&self) -> u64 {
        self.idle + self.active + self.busy + self.draining
    }

    /// Each status with its count, in the order statuses are declared.
    pub fn by_status(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let counts = *self;
        AgentStatus::ALL
            .iter()
            .map(move |&s| (s.as_str(), counts.of(s)))
    }

    /// How many agents are in `status`.
    pub fn of(&self, status: AgentStatus) -> u64 {
        match status {
            AgentStatus::Idle => self.idle,
            AgentStatus::Active => self.active,
            AgentStatus::Busy => self.busy,
            AgentStatus::Draining => self.draining,
            AgentStatus::Offline => self.offline,
            AgentStatus::Suspended => self.suspended,
        }
    }

    /// Counts `n` more agents in `status`.
    pub fn add(&mut self, status: AgentStatus, n: u64) {
        let slot = match status {
            AgentStatus::Idle => &mut self.idle,
            AgentStatus::Active => &mut self.active,
            AgentStatus::Busy => &mut self.busy,
            AgentStatus::Draining => &mut self.draining,
            AgentStatus::Offline => &mut self.offline,
            AgentStatus::Suspended => &mut self.suspended,
        };
        *slot += n;
    }
}

/// Where agents live.
#[async_trait]
pub trait AgentRepository: Send + Sync {
    /// Stores a new agent (`version` 0), the API key bound to it, and `events`, in one transaction.
    /// Returns the stored events, in the order given (they get their `seq` when sequenced).
    async fn insert(
        &self,
        agent: &Agent,
        key: &ApiKey,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// The agent with this ID. `NotFound` if there is none.
    async fn get(&self, id: AgentId) -> Result<Agent, RepoError>;

    /// Agents matching the query, newest first (`created_at` then `id`, both descending),
    /// strictly after `query.after`, at most `query.limit` of them.
    async fn list(&self, query: &AgentQuery) -> Result<Vec<Agent>, RepoError>;

    /// Replaces the stored agent with `agent` if the stored `version` still equals
    /// `agent.version`, bumps the stored version by one, and stores `events`; one transaction.
    /// `NotFound` if the agent is gone; `Conflict` if the version moved (nothing written).
    /// Returns the stored events.
    async fn update(
        &self,
        agent: &Agent,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// Removes the agent if its stored `version` equals `agent.version`, revokes every API key
    /// bound to it (at `revoked_at`), and stores `events`; one transaction.
    /// `NotFound` if it is gone; `Conflict` if the version moved.
    async fn delete(
        &self,
        agent: &Agent,
        revoked_at: DateTime<Utc>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// Records heartbeats that change nothing but the time: each named agent that exists gets
    /// the later of its stored `last_heartbeat` and the one given (and of its `updated_at`),
    /// and its version bumped when that moved them; nothing else changes, and no event is
    /// stored. Returns how many agents it wrote.
    async fn record_heartbeats(&self, beats: &[(AgentId, DateTime<Utc>)])
        -> Result<u64, RepoError>;

    /// Online agents (idle, active, busy or draining) whose last heartbeat is at or before
    /// `cutoff`, oldest heartbeat first, at most `limit`.
    async fn heartbeat_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Agent>, RepoError>;

    /// How many agents are in each status.
    async fn count_by_status(&self) -> Result<StatusCounts, RepoError>;

    /// Whether any registered agent, in whatever status, has every one of `capabilities`.
    async fn capable_exists(&self, capabilities: &CapabilitySet) -> Result<bool, RepoError>;
}
