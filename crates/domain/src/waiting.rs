//! Why a pending task waits: what the scheduler found missing, as a value the platform acts on
//! (capability gaps are found by it), rendered as a sentence only for people.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What stops a pending task from being placed. Amounts are written as the API writes
/// quantities (`2`, `0.5`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitReason {
    /// No online agent has this one of the required capabilities.
    MissingCapability { capability: String },
    /// Each required capability is online somewhere, but no agent has them all.
    NoAgentWithAll,
    /// `matching` agents have the capabilities, and all are at capacity.
    AllAtCapacity { matching: u32 },
    /// `matching` agents have the capabilities and room, but none has enough free `dimension`.
    AgentsShort {
        matching: u32,
        dimension: String,
        needs: String,
        most_free: String,
    },
    /// A claim names a pool that does not exist.
    UnknownPool { pool: String },
    /// A claimed pool is in maintenance.
    PoolInMaintenance { pool: String },
    /// A claimed pool has too little of `dimension` free.
    PoolShort {
        pool: String,
        dimension: String,
        free: String,
        needs: String,
    },
}

impl WaitReason {
    /// The stored `kind`s of the capability gaps, for stores that query by kind.
    pub const CAPABILITY_GAP_KINDS: [&'static str; 2] = ["missing_capability", "no_agent_with_all"];

    /// Whether the task waits for a capability no online agent has: what capability-gap
    /// detection looks at.
    pub fn is_capability_gap(&self) -> bool {
        matches!(
            self,
            WaitReason::MissingCapability { .. } | WaitReason::NoAgentWithAll
        )
    }
}

fn agents(n: u32) -> &'static str {
    if n == 1 {
        "agent"
    } else {
        "agents"
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::MissingCapability { capability } => {
                write!(f, "no online agent has capability {capability}")
            }
            WaitReason::NoAgentWithAll => {
                f.write_str("no online agent has all the required capabilities")
            }
            WaitReason::AllAtCapacity { matching } => {
                write!(f, "{matching} {} match, all at capacity", agents(*matching))
            }
            WaitReason::AgentsShort {
                matching,
                dimension,
                needs,
                most_free,
            } => write!(
                f,
                "{matching} {} match, none has enough free {dimension} (needs {needs}, at most {most_free} free)",
                agents(*matching)
            ),
            WaitReason::UnknownPool { pool } => write!(f, "resource {pool} does not exist"),
            WaitReason::PoolInMaintenance { pool } => {
                write!(f, "resource {pool} is in maintenance")
            }
            WaitReason::PoolShort {
                pool,
                dimension,
                free,
                needs,
            } => write!(f, "resource {pool} has {free} of {needs} {dimension} free"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_sentences_and_round_trip_as_values() {
        let reasons = [
            (
                WaitReason::MissingCapability {
                    capability: "gpu".into(),
                },
                "no online agent has capability gpu",
            ),
            (
                WaitReason::AllAtCapacity { matching: 1 },
                "1 agent match, all at capacity",
            ),
            (
                WaitReason::PoolShort {
                    pool: "gpu_cluster_01".into(),
                    dimension: "gpus".into(),
                    free: "0".into(),
                    needs: "1".into(),
                },
                "resource gpu_cluster_01 has 0 of 1 gpus free",
            ),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.to_string(), text);
            let stored = serde_json::to_value(&reason).unwrap();
            assert_eq!(
                serde_json::from_value::<WaitReason>(stored).unwrap(),
                reason
            );
        }
        assert!(WaitReason::NoAgentWithAll.is_capability_gap());
        for gap in [
            WaitReason::NoAgentWithAll,
            WaitReason::MissingCapability {
                capability: "gpu".into(),
            },
        ] {
            let kind = serde_json::to_value(&gap).unwrap()["kind"].clone();
            assert!(WaitReason::CAPABILITY_GAP_KINDS.contains(&kind.as_str().unwrap()));
        }
        assert!(!WaitReason::AllAtCapacity { matching: 2 }.is_capability_gap());
    }
}
