//! The replicas' announcements of the settings they must share (`ReplicaRegistry`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ports::{ReplicaRegistry, ReplicaSettings, RepoError};
use sqlx::Row;

use crate::error::{corrupt, repo_error};
use crate::PgStore;

#[async_trait]
impl ReplicaRegistry for PgStore {
    async fn announce(
        &self,
        mine: &ReplicaSettings,
        since: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<Vec<ReplicaSettings>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < $1 AND id <> $2")
            .bind(forget_before)
            .bind(mine.replica)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        sqlx::query(
            "INSERT INTO replicas (id, settings, seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET settings = EXCLUDED.settings,
                                            seen_at = EXCLUDED.seen_at",
        )
        .bind(mine.replica)
        .bind(sqlx::types::Json(&mine.settings))
        .bind(mine.seen_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        let rows = sqlx::query(
            "SELECT id, settings, seen_at FROM replicas WHERE id <> $1 AND seen_at >= $2
             ORDER BY id",
        )
        .bind(mine.replica)
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_error)?;
        tx.commit().await.map_err(repo_error)?;
        rows.iter()
            .map(|row| {
                let settings: sqlx::types::Json<std::collections::BTreeMap<String, String>> = row
                    .try_get("settings")
                    .map_err(|e| corrupt("replica settings", e.to_string()))?;
                Ok(ReplicaSettings {
                    replica: row.try_get("id").map_err(repo_error)?,
                    settings: settings.0,
                    seen_at: row.try_get("seen_at").map_err(repo_error)?,
                })
            })
            .collect()
    }
}
