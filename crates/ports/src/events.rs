//! The event ports: the durable log events are read back from, and the live bus.

use async_trait::async_trait;
use domain::Event;

use crate::{ComponentStatus, RepoError};

/// The stored events, as written by the repositories together with their changes.
///
/// A write numbers its events with the next `seq` values as the last step before it commits,
/// and writes commit in the order of their numbers, on every replica: the order of `seq` is
/// the order in which events became visible, with no gaps, and a reader at `seq` N that asks
/// for events after N misses nothing.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Hands over up to `limit` events this store handle's writes numbered and committed, in
    /// `seq` order, each once (whichever caller takes it): what the relay publishes. It also
    /// numbers committed events that an earlier version stored without a number and left
    /// behind, and hands those over in their turn. Empty when there is nothing new.
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError>;

    /// What [`sequence`](Self::sequence) hands over, without looking for events an earlier
    /// version left behind: the hand-over right after a write, which costs no store round trip
    /// when this handle's writes are all it has to give. Both draw on the same queue, so an
    /// event is handed over once, by whichever is called; the periodic relay calls `sequence`.
    async fn hand_over(&self, limit: u32) -> Result<Vec<Event>, RepoError>;

    /// Events with `seq` strictly greater than `after_seq`, oldest first, at most `limit`.
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError>;

    /// The numbered events about one task, oldest first, at most `limit`.
    async fn task_events(&self, task: domain::TaskId, limit: u32) -> Result<Vec<Event>, RepoError>;

    /// Deletes numbered events created before `older_than`, and those beyond the newest
    /// `keep_newest`; never the newest numbered event, so numbering always continues upwards.
    /// Returns how many were deleted.
    async fn prune(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
        keep_newest: u64,
    ) -> Result<u64, RepoError>;

    /// The newest numbered events, newest first, at most `limit`.
    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError>;

    /// The identity of this log: the same for every replica that reads it, different for every
    /// other store, and unchanged for the store's life. It names this deployment's events on a
    /// bus that other deployments may share.
    async fn log_id(&self) -> Result<uuid::Uuid, RepoError>;
}

/// Live delivery of committed events to whoever listens, on this replica or all of them.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Hands committed events over for delivery, in order, without waiting for subscribers.
    /// Never fails the caller: the events are already durable in the log, so a delivery problem
    /// is the adapter's to log; readers of the log still see every event.
    async fn publish(&self, events: &[Event]);

    /// A receiver of every event published from now on, on any replica the bus reaches, in the
    /// order published. A receiver that falls more than the channel's capacity behind gets
    /// `RecvError::Lagged` and must catch up from the log.
    ///
    /// What a receiver gets MUST be committed events of this deployment's log, exactly as
    /// stored: a bus that hears from outside the process (Redis, which others may reach) takes
    /// what it hears only as a notice that there is news, and delivers events it has read back
    /// from the log. A message that is not a committed event of this log is never delivered.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event>;

    /// Whether the bus can deliver right now.
    async fn status(&self) -> ComponentStatus;
}
