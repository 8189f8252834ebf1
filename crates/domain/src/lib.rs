//! The platform's domain: entities, value types and the rules that move them between states.
//!
//! Everything here is pure. Nothing does I/O, nothing is async, nothing reads a clock:
//! the time is always a parameter, so every rule can be tested with plain values.

#[macro_use]
mod names;
pub use names::one_of;
#[doc(hidden)]
pub use serde as __serde;

pub mod agent;
pub mod audit;
pub mod auth;
pub mod capability;
pub mod conflict;
pub mod credential;
pub mod event;
pub mod ids;
pub mod limit;
pub mod metadata;
pub mod page;
pub mod quantity;
pub mod resource;
pub mod scheduler;
pub mod task;
pub mod validation;
pub mod waiting;
pub mod workflow;

pub use agent::{Agent, AgentPatch, AgentStatus, HeartbeatStatus, NewAgent, StatusRequest};
pub use audit::{AuditAction, AuditEntry};
pub use auth::{Principal, Role, UserToken, PLATFORM_ACTOR};
pub use capability::{Capability, CapabilitySet};
pub use conflict::{
    Conflict, ConflictReport, ConflictStatus, ConflictType, Severity, Source, Strategy,
};
pub use credential::{ApiKey, KeyHash, NewApiKey, NewUser, User, UserChange};
pub use event::{Channel, Event, EventKind, NewEvent};
pub use ids::{AgentId, ApiKeyId, ConflictId, ExecutionId, ResourceId, TaskId, UserId, WorkflowId};
pub use metadata::Metadata;
pub use page::{Cursor, Limit};
pub use quantity::{Quantity, QuantityError, ResourceMap};
pub use resource::{Allocation, Amounts, NewResource, Resource, ResourcePatch, ResourceStatus};
pub use task::{NewTask, Priority, ResourceClaim, Task, TaskInput, TaskStatus};
pub use validation::{FieldError, ValidationErrors};
pub use waiting::WaitReason;
pub use workflow::{Execution, ExecutionStatus, StepStatus, Workflow};
