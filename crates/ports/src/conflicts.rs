//! The conflict repository port.

use async_trait::async_trait;
use domain::{
    AgentId, Conflict, ConflictId, ConflictStatus, ConflictType, Cursor, NewEvent, Severity,
};

use crate::RepoError;

/// Which conflicts to list, and which page.
#[derive(Debug, Clone, Default)]
pub struct ConflictQuery {
    pub status: Option<ConflictStatus>,
    pub severity: Option<Severity>,
    pub conflict_type: Option<ConflictType>,
    /// Only conflicts this agent is part of (as `agent_id` or among `involved_agents`).
    pub agent: Option<AgentId>,
    /// Start after this position (exclusive).
    pub after: Option<Cursor>,
    /// Return at most this many rows.
    pub limit: u32,
}

/// Where conflicts live.
#[async_trait]
pub trait ConflictRepository: Send + Sync {
    /// Stores a new conflict (`version` 0) and `events`, in one transaction. `Conflict` if an
    /// open conflict with the same `cause` exists (nothing is written then).
    async fn insert_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// The conflict with this ID. `NotFound` if there is none.
    async fn get_conflict(&self, id: ConflictId) -> Result<Conflict, RepoError>;

    /// Conflicts matching the query, newest first (`created_at` then `id`, descending),
    /// strictly after `query.after`, at most `query.limit`.
    async fn list_conflicts(&self, query: &ConflictQuery) -> Result<Vec<Conflict>, RepoError>;

    /// Open detected conflicts of these types, oldest first, at most `limit`.
    async fn open_detected(
        &self,
        types: &[ConflictType],
        limit: u32,
    ) -> Result<Vec<Conflict>, RepoError>;

    /// Writes the conflict's changeable fields (description, metadata, status, the involved
    /// agents and tasks, resolution, `updated_at`, `resolved_at`) if its stored `version` still
    /// equals `conflict.version`, bumps the version, and stores `events`; one transaction. What
    /// it is about and how it came to be (type, severity, agent, task, pool, cause, source,
    /// reporter, `created_at`) stay as inserted. `NotFound` if gone, `Conflict` if moved.
    async fn update_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// How many conflicts are in each status: (open, resolved, dismissed).
    async fn count_conflicts(&self) -> Result<(u64, u64, u64), RepoError>;
}
