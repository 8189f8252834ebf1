//! The ports: every trait the core needs from the outside world.
//!
//! Each method's documentation is its contract. `testkit` checks exactly these contracts
//! against every adapter, so the embedded store can never drift from PostgreSQL.
//!
//! One rule holds for every repository method: **one call is one transaction**. A method that
//! changes state also takes the events that change causes and stores them atomically with it,
//! so an event exists if and only if its change was committed.

mod agents;
mod credentials;
mod error;
mod events;
mod system;
mod tasks;

pub use agents::{AgentQuery, AgentRepository, StatusCounts};
pub use credentials::CredentialRepository;
pub use error::RepoError;
pub use events::{EventBus, EventLog};
pub use system::{Clock, ComponentStatus, HealthCheck, IdGenerator};
pub use tasks::{
    Changes, Decide, IdempotencyRecord, SchedulingSnapshot, TaskCounts, TaskQuery, TaskRepository,
};
