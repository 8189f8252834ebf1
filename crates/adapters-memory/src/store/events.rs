//! The event log in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Event, TaskId};
use ports::{EventLog, RepoError};

use super::MemoryStore;

#[async_trait]
impl EventLog for MemoryStore {
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        // Nothing is ever left behind here: every write numbers its events.
        self.hand_over(limit).await
    }

    async fn hand_over(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        let mut state = self.lock();
        let start = state.events.partition_point(|e| e.seq <= state.handed);
        let handed: Vec<Event> = state
            .events
            .range(start..)
            .take(limit as usize)
            .cloned()
            .collect();
        if let Some(last) = handed.last() {
            state.handed = last.seq;
        }
        Ok(handed)
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
