//! API keys in PostgreSQL.

use async_trait::async_trait;
use domain::{AgentId, ApiKey, ApiKeyId, KeyHash, Role};
use ports::{CredentialRepository, RepoError};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
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
        .fetch_optional(self.pool())
        .await
        .map_err(repo_error)?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }
}
