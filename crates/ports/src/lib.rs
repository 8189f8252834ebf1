//! The ports: every trait the core needs from the outside world.
//!
//! Each method's documentation is its contract. `testkit` checks exactly these contracts
//! against every adapter, so the embedded store can never drift from PostgreSQL.
//!
//! One rule holds for every repository method: **one call is one transaction**. A method that
//! changes state also takes the events that change causes and stores them atomically with it,
//! so an event exists if and only if its change was committed.

mod agents;
mod conflicts;
mod credentials;
mod error;
mod events;
mod resources;
mod system;
mod tasks;
mod workflows;

pub use agents::{AgentQuery, AgentRepository, StatusCounts};
pub use conflicts::{ConflictQuery, ConflictRepository};
pub use credentials::CredentialRepository;
pub use error::RepoError;
pub use events::{EventBus, EventLog};
pub use resources::ResourceRepository;
pub use system::{
    Admission, Clock, ComponentStatus, HealthCheck, IdGenerator, RateLimiter, ReplicaRegistry,
    ReplicaSettings,
};
pub use tasks::{
    AgentOutcomes, Changes, Decide, DecideWithAgents, Durations, IdempotencyRecord, PassSize,
    SchedulingSnapshot, SnapshotRows, Submission, TaskCounts, TaskQuery, TaskRepository,
};
pub use workflows::{WorkflowCounts, WorkflowRepository};

/// Everything one store provides: every repository, the event log and its health. The embedded
/// store and PostgreSQL each implement all of it.
pub trait Store:
    AgentRepository
    + TaskRepository
    + ResourceRepository
    + ConflictRepository
    + CredentialRepository
    + WorkflowRepository
    + EventLog
    + HealthCheck
    + ReplicaRegistry
{
}

impl<S> Store for S where
    S: AgentRepository
        + TaskRepository
        + ResourceRepository
        + ConflictRepository
        + CredentialRepository
        + WorkflowRepository
        + EventLog
        + HealthCheck
        + ReplicaRegistry
{
}
