//! The names a conflict is described by: its type, severity, status and source, and the
//! strategies that resolve it. Each is written and parsed by the same table.

use std::fmt;
use std::str::FromStr;

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} '{s}' (expected one of: {})", $what, names.join(", "))
                })
            }
        }
    };
}

named_enum!(
    /// What the conflict is about.
    ConflictType, "conflict type" {
        ResourceContention => "resource_contention",
        TaskAssignment => "task_assignment",
        StateInconsistency => "state_inconsistency",
        GoalConflict => "goal_conflict",
        PriorityDispute => "priority_dispute",
        CommunicationFailure => "communication_failure",
        PerformanceDispute => "performance_dispute",
        PolicyViolation => "policy_violation",
        DeadlineMissed => "deadline_missed",
        LeaseExpired => "lease_expired",
        CapabilityGap => "capability_gap",
        Other => "other",
    }
);

named_enum!(
    /// How bad it is.
    Severity, "severity" {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

named_enum!(
    /// Where a conflict is in its life.
    ConflictStatus, "status" {
        Open => "open",
        Resolved => "resolved",
        Dismissed => "dismissed",
    }
);

named_enum!(
    /// Who raised it.
    Source, "source" {
        Reported => "reported",
        Detected => "detected",
    }
);

named_enum!(
    /// A way of resolving a conflict.
    Strategy, "strategy" {
        PriorityBased => "priority_based",
        PerformanceBased => "performance_based",
        Consensus => "consensus",
        PolicyEnforcement => "policy_enforcement",
        RetryWithBackoff => "retry_with_backoff",
        Manual => "manual",
    }
);
