//! Typed identifiers, so an agent's ID can never be passed where a task's is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(value: Uuid) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies a registered agent.
    AgentId
);
id_type!(
    /// Identifies a stored API key.
    ApiKeyId
);
id_type!(
    /// Identifies a task.
    TaskId
);
id_type!(
    /// Identifies a shared resource pool.
    ResourceId
);
id_type!(
    /// Identifies a conflict.
    ConflictId
);
id_type!(
    /// Identifies a user.
    UserId
);
id_type!(
    /// Identifies a workflow definition.
    WorkflowId
);
id_type!(
    /// Identifies one execution of a workflow.
    ExecutionId
);
