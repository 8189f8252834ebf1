//! The audit trail: who did what to credentials, who signed in or was refused, and who settled
//! conflicts, with when.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    ApiKeyCreated,
    ApiKeyRevoked,
    UserCreated,
    /// A user's role or password changed (their earlier tokens ended).
    UserUpdated,
    UserDeleted,
    LoginSucceeded,
    LoginFailed,
    AccessDenied,
    ConflictResolved,
    ConflictDismissed,
    /// A strategy acted on a conflict that stays open (preemption during contention).
    ConflictActed,
}

impl AuditAction {
    pub const ALL: [AuditAction; 11] = [
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyRevoked,
        AuditAction::UserCreated,
        AuditAction::UserUpdated,
        AuditAction::UserDeleted,
        AuditAction::LoginSucceeded,
        AuditAction::LoginFailed,
        AuditAction::AccessDenied,
        AuditAction::ConflictResolved,
        AuditAction::ConflictDismissed,
        AuditAction::ConflictActed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ApiKeyCreated => "api_key_created",
            AuditAction::ApiKeyRevoked => "api_key_revoked",
            AuditAction::UserCreated => "user_created",
            AuditAction::UserUpdated => "user_updated",
            AuditAction::UserDeleted => "user_deleted",
            AuditAction::LoginSucceeded => "login_succeeded",
            AuditAction::LoginFailed => "login_failed",
            AuditAction::AccessDenied => "access_denied",
            AuditAction::ConflictResolved => "conflict_resolved",
            AuditAction::ConflictDismissed => "conflict_dismissed",
            AuditAction::ConflictActed => "conflict_acted",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action '{s}'"))
    }
}

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
