//! API keys, users and the audit trail in memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{ApiKey, ApiKeyId, AuditAction, AuditEntry, Cursor, KeyHash, Role, User, UserId};
use ports::{CredentialRepository, RepoError};

use super::{newest_page, MemoryStore, EVENT_RETENTION};

#[async_trait]
impl CredentialRepository for MemoryStore {
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.lock().keys.get(hash).cloned())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state.keys.contains_key(&key.hash) || state.keys.values().any(|k| k.id == key.id) {
            return Err(RepoError::Conflict("duplicate API key".into()));
        }
        state.keys.insert(key.hash.clone(), key.clone());
        Ok(())
    }

    async fn list_api_keys(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let state = self.lock();
        Ok(newest_page(
            state.keys.values(),
            |k| (k.created_at, k.id.as_uuid()),
            after,
            limit,
        ))
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<ApiKey, RepoError> {
        let mut state = self.lock();
        let key = state
            .keys
            .values_mut()
            .find(|k| k.id == id)
            .ok_or(RepoError::NotFound)?;
        key.revoked_at.get_or_insert(at);
        Ok(key.clone())
    }

    async fn insert_first_admin_key(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        let admin = state
            .keys
            .values()
            .any(|k| k.role == Role::Admin && k.is_usable(now))
            || state.users.values().any(|u| u.role == Role::Admin);
        if admin {
            return Ok(false);
        }
        state.keys.insert(key.hash.clone(), key.clone());
        Ok(true)
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let kept = state.audit.len();
        state.audit.retain(|e| e.at >= before);
        Ok((kept - state.audit.len()) as u64)
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<ApiKeyId>, RepoError> {
        Ok(self
            .lock()
            .keys
            .values()
            .filter(|k| k.revoked_at.is_some_and(|at| at > since))
            .map(|k| k.id)
            .collect())
    }

    async fn admin_exists(&self, now: DateTime<Utc>) -> Result<bool, RepoError> {
        let state = self.lock();
        Ok(state
            .keys
            .values()
            .any(|k| k.role == Role::Admin && k.is_usable(now))
            || state.users.values().any(|u| u.role == Role::Admin))
    }

    async fn insert_user(&self, user: &User) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state
            .users
            .values()
            .any(|u| u.username == user.username || u.id == user.id)
        {
            return Err(RepoError::Conflict("username taken".into()));
        }
        state.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, RepoError> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.username == username)
            .cloned())
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, RepoError> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<User, RepoError> {
        let mut state = self.lock();
        let user = state.users.get_mut(&id).ok_or(RepoError::NotFound)?;
        if let Some(role) = role {
            user.role = role;
        }
        if let Some(hash) = password_hash {
            user.password_hash = hash.to_owned();
        }
        user.token_version += 1;
        Ok(user.clone())
    }

    async fn list_users(&self, after: Option<Cursor>, limit: u32) -> Result<Vec<User>, RepoError> {
        let state = self.lock();
        Ok(newest_page(
            state.users.values(),
            |u| (u.created_at, u.id.as_uuid()),
            after,
            limit,
        ))
    }

    async fn delete_user(&self, id: UserId) -> Result<User, RepoError> {
        self.lock().users.remove(&id).ok_or(RepoError::NotFound)
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RepoError> {
        let mut state = self.lock();
        if state.audit.len() >= EVENT_RETENTION {
            state.audit.pop_front();
        }
        state.audit.push_back(entry.clone());
        Ok(())
    }

    async fn audit_entries(
        &self,
        after: Option<Cursor>,
        action: Option<AuditAction>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RepoError> {
        let state = self.lock();
        let rows = state
            .audit
            .iter()
            .filter(|e| action.is_none_or(|a| e.action == a));
        Ok(newest_page(rows, |e| (e.at, e.id), after, limit))
    }
}
