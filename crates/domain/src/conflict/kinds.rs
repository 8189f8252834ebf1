//! The names a conflict is described by: its type, severity, status and source, and the
//! strategies that resolve it. Each is written and parsed by the same table.

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
