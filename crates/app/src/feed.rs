//! The event feed: live events for subscribers, and the log for catching up and for the
//! dashboard's activity list, each filtered by what the caller may see.

use domain::{Event, Principal};
use tokio::sync::broadcast;

use crate::{AppError, Platform};

/// A page of the log after some `seq`, filtered for one caller.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events the caller may see, oldest first.
    pub events: Vec<Event>,
    /// Where the next page starts: the last `seq` read, seen or not.
    pub next_after: i64,
    /// True when the log has nothing more after this page.
    pub exhausted: bool,
}

impl Platform {
    /// Every event published from now on, on every replica the bus reaches.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.deps.bus.subscribe()
    }

    /// The retained events after `after`, at most `limit` read, of which the caller sees those it
    /// may. Pages on with `next_after` until `exhausted`.
    pub async fn events_after(
        &self,
        actor: &Principal,
        after: i64,
        limit: u32,
    ) -> Result<EventPage, AppError> {
        let read = self
            .deps
            .event_log
            .events_after(after, limit)
            .await
            .map_err(|e| AppError::from_repo("Event", e))?;
        let exhausted = read.len() < limit as usize;
        let next_after = read.last().map_or(after, |e| e.seq);
        let events = read
            .into_iter()
            .filter(|e| actor.can_see_event(e))
            .collect();
        Ok(EventPage {
            events,
            next_after,
            exhausted,
        })
    }

    /// Enforces the retention settings on the event log. Returns how many events were deleted.
    pub async fn prune_events(&self) -> Result<u64, AppError> {
        let older_than = self.deps.clock.now() - self.settings.event_max_age;
        self.deps
            .event_log
            .prune(older_than, self.settings.event_max_count)
            .await
            .map_err(|e| AppError::from_repo("Event", e))
    }

    /// The numbered events after `after`, oldest first, at most `limit`, unfiltered: for the
    /// process's own delivery machinery, never for a caller.
    pub async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, AppError> {
        self.deps
            .event_log
            .events_after(after, limit)
            .await
            .map_err(|e| AppError::from_repo("Event", e))
    }

    /// The newest `seq`, 0 when the log is empty.
    pub async fn newest_seq(&self) -> Result<i64, AppError> {
        Ok(self
            .deps
            .event_log
            .latest_events(1)
            .await
            .map_err(|e| AppError::from_repo("Event", e))?
            .first()
            .map_or(0, |e| e.seq))
    }

    /// The oldest `seq` still retained, if any event is.
    pub async fn oldest_retained_seq(&self) -> Result<Option<i64>, AppError> {
        Ok(self
            .deps
            .event_log
            .events_after(0, 1)
            .await
            .map_err(|e| AppError::from_repo("Event", e))?
            .first()
            .map(|e| e.seq))
    }

    /// The newest events, newest first: the dashboard's activity list.
    pub async fn activity(&self, actor: &Principal, limit: u32) -> Result<Vec<Event>, AppError> {
        if !actor.can_read_all() {
            return Err(AppError::Forbidden(format!(
                "role {} may not read the activity feed",
                actor.role
            )));
        }
        self.deps
            .event_log
            .latest_events(limit)
            .await
            .map_err(|e| AppError::from_repo("Event", e))
    }
}
