//! Wire DTOs: the JSON shapes of requests and responses, converted to and from domain types.

pub mod agents;
pub mod system;
pub mod tasks;
