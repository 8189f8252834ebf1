//! API keys, users and the audit trail in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    AgentId, ApiKey, ApiKeyId, AuditAction, AuditEntry, Cursor, KeyHash, Role, User, UserId,
};
use ports::{CredentialRepository, RepoError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
use crate::rows::ReadRows;
use crate::PgStore;

/// Stores a key inside the caller's transaction.
pub(crate) async fn insert_key(conn: &mut PgConnection, key: &ApiKey) -> Result<(), RepoError> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, hash, role, agent_id, created_at, expires_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(key.id.as_uuid())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.hash.0)
    .bind(key.role.as_str())
    .bind(key.agent_id.map(|a| a.as_uuid()))
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await
    .map_err(repo_error)?;
    Ok(())
}

fn key_from_row(row: &PgRow) -> Result<ApiKey, RepoError> {
    let role: String = row.try_get("role").map_err(repo_error)?;
    Ok(ApiKey {
        id: ApiKeyId(row.try_get("id").map_err(repo_error)?),
        name: row.try_get("name").map_err(repo_error)?,
        prefix: row.try_get("prefix").map_err(repo_error)?,
        hash: KeyHash(row.try_get("hash").map_err(repo_error)?),
        role: role
            .parse::<Role>()
            .map_err(|e| corrupt("API key role", e))?,
        agent_id: row
            .try_get::<Option<Uuid>, _>("agent_id")
            .map_err(repo_error)?
            .map(AgentId),
        created_at: row.try_get("created_at").map_err(repo_error)?,
        expires_at: row.try_get("expires_at").map_err(repo_error)?,
        revoked_at: row.try_get("revoked_at").map_err(repo_error)?,
    })
}

#[async_trait]
impl CredentialRepository for PgStore {
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError> {
        sqlx::query(
            "SELECT id, name, prefix, hash, role, agent_id, created_at, expires_at, revoked_at
             FROM api_keys WHERE hash = $1",
        )
        .bind(&hash.0)
        .read_optional(self.pool(), key_from_row)
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        insert_key(&mut conn, key).await
    }

    async fn list_api_keys(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let (at, id) = split(after);
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .read_all(self.pool(), key_from_row)
        .await
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<ApiKey, RepoError> {
        sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
             RETURNING {KEY_COLUMNS}"
        ))
        .bind(id.as_uuid())
        .bind(at)
        .read_one(self.pool(), key_from_row)
        .await
    }

    async fn insert_first_admin_key(
        &self,
        key: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        // Serializes the check and the insert across replicas.
        crate::advisory_lock(&mut tx, BOOTSTRAP_LOCK, crate::Hold::Exclusive).await?;
        let admin: bool = sqlx::query_scalar(ADMIN_EXISTS)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(repo_error)?;
        if admin {
            return Ok(false);
        }
        insert_key(&mut tx, key).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(true)
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let deleted = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(repo_error)?;
        Ok(deleted.rows_affected())
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<ApiKeyId>, RepoError> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM api_keys WHERE revoked_at > $1")
            .bind(since)
            .fetch_all(self.pool())
            .await
            .map_err(repo_error)?;
        Ok(ids.into_iter().map(ApiKeyId).collect())
    }

    async fn admin_exists(&self, now: DateTime<Utc>) -> Result<bool, RepoError> {
        sqlx::query_scalar(ADMIN_EXISTS)
            .bind(now)
            .fetch_one(self.pool())
            .await
            .map_err(repo_error)
    }

    async fn insert_user(&self, user: &User) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.as_uuid())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.created_at)
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(())
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, RepoError> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .read_optional(self.pool(), user_from_row)
        .await
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, RepoError> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.as_uuid())
            .read_optional(self.pool(), user_from_row)
            .await
    }

    async fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<User, RepoError> {
        sqlx::query(&format!(
            "UPDATE users SET role = COALESCE($2, role),
                 password_hash = COALESCE($3, password_hash),
                 token_version = token_version + 1
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        ))
        .bind(id.as_uuid())
        .bind(role.map(Role::as_str))
        .bind(password_hash)
        .read_one(self.pool(), user_from_row)
        .await
    }

    async fn list_users(&self, after: Option<Cursor>, limit: u32) -> Result<Vec<User>, RepoError> {
        let (at, id) = split(after);
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .read_all(self.pool(), user_from_row)
        .await
    }

    async fn delete_user(&self, id: UserId) -> Result<User, RepoError> {
        sqlx::query(&format!(
            "DELETE FROM users WHERE id = $1 RETURNING {USER_COLUMNS}"
        ))
        .bind(id.as_uuid())
        .read_one(self.pool(), user_from_row)
        .await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.id)
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.target)
        .bind(&entry.detail)
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(())
    }

    async fn audit_entries(
        &self,
        after: Option<Cursor>,
        action: Option<AuditAction>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RepoError> {
        let (at, id) = split(after);
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM audit_log
             WHERE ($1::timestamptz IS NULL OR (at, id) < ($1, $2))
               AND ($3::text IS NULL OR action = $3)
             ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(at)
        .bind(id)
        .bind(action.map(AuditAction::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action").map_err(repo_error)?;
                let detail: Value = row.try_get("detail").map_err(repo_error)?;
                Ok(AuditEntry {
                    id: row.try_get("id").map_err(repo_error)?,
                    at: row.try_get("at").map_err(repo_error)?,
                    actor: row.try_get("actor").map_err(repo_error)?,
                    action: action.parse().map_err(|e| corrupt("audit action", e))?,
                    target: row.try_get("target").map_err(repo_error)?,
                    detail,
                })
            })
            .collect()
    }
}

/// The key of the advisory lock that serializes issuing the bootstrap admin key.
const BOOTSTRAP_LOCK: i64 = 0x424f_4f54_5354_5241; // "BOOTSTRA"

const ADMIN_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL
                        AND (expires_at IS NULL OR expires_at > $1))
         OR EXISTS (SELECT 1 FROM users WHERE role = 'admin')";

const KEY_COLUMNS: &str =
    "id, name, prefix, hash, role, agent_id, created_at, expires_at, revoked_at";
const USER_COLUMNS: &str = "id, username, password_hash, role, created_at, token_version";

fn split(after: Option<Cursor>) -> (Option<DateTime<Utc>>, Option<Uuid>) {
    match after {
        Some(c) => (Some(c.created_at), Some(c.id)),
        None => (None, None),
    }
}

fn user_from_row(row: &PgRow) -> Result<User, RepoError> {
    let role: String = row.try_get("role").map_err(repo_error)?;
    Ok(User {
        id: UserId(row.try_get("id").map_err(repo_error)?),
        username: row.try_get("username").map_err(repo_error)?,
        password_hash: row.try_get("password_hash").map_err(repo_error)?,
        role: role.parse::<Role>().map_err(|e| corrupt("user role", e))?,
        created_at: row.try_get("created_at").map_err(repo_error)?,
        token_version: row.try_get("token_version").map_err(repo_error)?,
    })
}
