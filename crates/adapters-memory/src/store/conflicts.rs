//! Conflicts in memory.

use async_trait::async_trait;
use domain::{Conflict, ConflictId, ConflictStatus, ConflictType, NewEvent, Source};
use ports::{ConflictQuery, ConflictRepository, RepoError};

use super::{newest_page, unchanged, MemoryStore};

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
        let mut stored = conflict.clone();
        stored.version = 0;
        state.conflicts.insert(conflict.id, stored);
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
        let stored = state.conflicts.get(&conflict.id).map(|c| c.version);
        unchanged("conflict", conflict.id, conflict.version, stored)?;
        if let Some(stored) = state.conflicts.get_mut(&conflict.id) {
            // What it is about, and how it came to be, are the conflict's for good.
            stored.description = conflict.description.clone();
            stored.metadata = conflict.metadata.clone();
            stored.status = conflict.status;
            stored.involved_agents = conflict.involved_agents.clone();
            stored.involved_tasks = conflict.involved_tasks.clone();
            stored.resolution = conflict.resolution.clone();
            stored.updated_at = conflict.updated_at;
            stored.resolved_at = conflict.resolved_at;
            stored.version += 1;
        }
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
