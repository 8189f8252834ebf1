//! The audit trail: who did what to credentials, who signed in or was refused, and who settled
//! conflicts, with when.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

named_enum!(
    /// What an audit entry records.
    AuditAction, "audit action" {
            ApiKeyCreated => "api_key_created",
            ApiKeyRevoked => "api_key_revoked",
            UserCreated => "user_created",
            /// A user's role or password changed (their earlier tokens ended).
            UserUpdated => "user_updated",
            UserDeleted => "user_deleted",
            LoginSucceeded => "login_succeeded",
            LoginFailed => "login_failed",
            AccessDenied => "access_denied",
            ConflictResolved => "conflict_resolved",
            ConflictDismissed => "conflict_dismissed",
            /// A strategy acted on a conflict that stays open (preemption during contention).
            ConflictActed => "conflict_acted",
    }
);

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// Who: `user:<name>` (signed in), `token:<sub>` (any other JWT), `api-key:<prefix>`,
    /// `admin-api-key`, or `platform` (the platform itself); on a failed sign-in, `user:` and
    /// the username presented, never a password.
    pub actor: String,
    pub action: AuditAction,
    /// What it was done to: a key's or user's ID, a conflict's ID, a method and path.
    pub target: Option<String>,
    pub detail: Value,
}
