//! The credential repository port: API keys, users, and the audit trail.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{ApiKey, ApiKeyId, AuditAction, AuditEntry, Cursor, KeyHash, User, UserId};

use crate::RepoError;

/// Where API keys and users are kept.
#[async_trait]
pub trait CredentialRepository: Send + Sync {
    /// The key with this hash, revoked and expired ones included (the caller decides whether it
    /// is usable). `Ok(None)` if no key has this hash. The lookup is by exact hash, so its timing
    /// reveals nothing about the key.
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError>;

    /// Stores a new key. `Conflict` if its ID or hash exists.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), RepoError>;

    /// Keys, newest first (`created_at` then `id`, descending), strictly after `after`, at most
    /// `limit`; revoked ones included.
    async fn list_api_keys(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, RepoError>;

    /// Revokes a key at `at` unless it is revoked already; returns the key as stored after.
    /// `NotFound` if there is none.
    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<ApiKey, RepoError>;

    /// Stores `key` only if no admin credential exists at `now` (as [`admin_exists`] would
    /// say), atomically with that check, also against other replicas. Returns whether it did.
    ///
    /// [`admin_exists`]: CredentialRepository::admin_exists
    async fn insert_first_admin_key(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Deletes audit entries older than `before`; returns how many.
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;

    /// The keys revoked after `since`.
    async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<ApiKeyId>, RepoError>;

    /// Whether a usable (unrevoked, unexpired at `now`) admin key or an admin user exists.
    async fn admin_exists(&self, now: DateTime<Utc>) -> Result<bool, RepoError>;

    /// Stores a new user. `Conflict` if the username is taken.
    async fn insert_user(&self, user: &User) -> Result<(), RepoError>;

    /// The user with this username, if any.
    async fn find_user(&self, username: &str) -> Result<Option<User>, RepoError>;

    /// The user with this ID, if any.
    async fn get_user(&self, id: UserId) -> Result<Option<User>, RepoError>;

    /// Sets the user's role and password hash where given, and moves its token version on by
    /// one, in one step (two concurrent changes move it by two); returns the user as stored
    /// after. `NotFound` if there is none.
    async fn update_user(
        &self,
        id: UserId,
        role: Option<domain::Role>,
        password_hash: Option<&str>,
    ) -> Result<User, RepoError>;

    /// Users, newest first, strictly after `after`, at most `limit`.
    async fn list_users(&self, after: Option<Cursor>, limit: u32) -> Result<Vec<User>, RepoError>;

    /// Deletes a user. `NotFound` if there is none.
    async fn delete_user(&self, id: UserId) -> Result<User, RepoError>;

    /// Appends an entry to the audit trail.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RepoError>;

    /// Audit entries, newest first (`at` then `id`, descending), strictly after `after`,
    /// optionally of one action, at most `limit`.
    async fn audit_entries(
        &self,
        after: Option<Cursor>,
        action: Option<AuditAction>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RepoError>;
}
