//! Conflicts in PostgreSQL.

use async_trait::async_trait;
use domain::conflict::{Cause, Resolution};
use domain::{
    AgentId, Conflict, ConflictId, ConflictStatus, ConflictType, Metadata, NewEvent, ResourceId,
    TaskId,
};
use ports::{ConflictQuery, ConflictRepository, RepoError};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{check_written, corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::PgStore;

const COLUMNS: &str = "id, agent_id, task_id, conflict_type, description, severity, metadata, \
    status, source, involved_agents, involved_tasks, resource_id, resolution, cause, \
    reported_by, created_at, updated_at, resolved_at, version";

fn parse<T: std::str::FromStr<Err = String>>(row: &PgRow, column: &str) -> Result<T, RepoError> {
    let text: String = row.try_get(column).map_err(repo_error)?;
    text.parse().map_err(|e| corrupt(column, e))
}

fn resolution_json(r: &Resolution) -> Value {
    json!({
        "strategy": r.strategy.map(|s| s.as_str()),
        "outcome": r.outcome,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "details": r.details,
    })
}

fn resolution_from(value: Value) -> Result<Resolution, RepoError> {
    let bad = |what: &str| corrupt("conflict resolution", what);
    Ok(Resolution {
        strategy: match value["strategy"].as_str() {
            None => None,
            Some(s) => Some(s.parse().map_err(|e: String| bad(&e))?),
        },
        outcome: value["outcome"]
            .as_str()
            .ok_or_else(|| bad("no outcome"))?
            .to_owned(),
        decided_by: value["decided_by"]
            .as_str()
            .ok_or_else(|| bad("no decided_by"))?
            .to_owned(),
        decided_at: serde_json::from_value(value["decided_at"].clone())
            .map_err(|_| bad("no decided_at"))?,
        details: value["details"].clone(),
    })
}

fn conflict_from_row(row: &PgRow) -> Result<Conflict, RepoError> {
    let e = repo_error;
    let metadata: Value = row.try_get("metadata").map_err(e)?;
    let agents: Vec<Uuid> = row.try_get("involved_agents").map_err(e)?;
    let tasks: Vec<Uuid> = row.try_get("involved_tasks").map_err(e)?;
    let resolution: Option<Value> = row.try_get("resolution").map_err(e)?;
    Ok(Conflict {
        id: ConflictId(row.try_get("id").map_err(e)?),
        agent_id: row
            .try_get::<Option<Uuid>, _>("agent_id")
            .map_err(e)?
            .map(AgentId),
        task_id: row
            .try_get::<Option<Uuid>, _>("task_id")
            .map_err(e)?
            .map(TaskId),
        conflict_type: parse(row, "conflict_type")?,
        description: row.try_get("description").map_err(e)?,
        severity: parse(row, "severity")?,
        metadata: match metadata {
            Value::Object(map) => {
                Metadata::parse(map).map_err(|err| corrupt("conflict metadata", err))?
            }
            other => return Err(corrupt("conflict metadata", other)),
        },
        status: parse(row, "status")?,
        source: parse(row, "source")?,
        involved_agents: agents.into_iter().map(AgentId).collect(),
        involved_tasks: tasks.into_iter().map(TaskId).collect(),
        resource_id: row
            .try_get::<Option<Uuid>, _>("resource_id")
            .map_err(e)?
            .map(ResourceId),
        resolution: resolution.map(resolution_from).transpose()?,
        cause: row
            .try_get::<Option<String>, _>("cause")
            .map_err(e)?
            .map(|c| Cause::read(&c)),
        reported_by: row.try_get("reported_by").map_err(e)?,
        created_at: row.try_get("created_at").map_err(e)?,
        updated_at: row.try_get("updated_at").map_err(e)?,
        resolved_at: row.try_get("resolved_at").map_err(e)?,
        version: row.try_get("version").map_err(e)?,
    })
}

fn uuids<T: Copy>(ids: &[T], f: impl Fn(T) -> Uuid) -> Vec<Uuid> {
    ids.iter().copied().map(f).collect()
}

#[async_trait]
impl ConflictRepository for PgStore {
    async fn insert_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO conflicts ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, 0)
             ON CONFLICT DO NOTHING"
        ))
        .bind(conflict.id.as_uuid())
        .bind(conflict.agent_id.map(|a| a.as_uuid()))
        .bind(conflict.task_id.map(|t| t.as_uuid()))
        .bind(conflict.conflict_type.as_str())
        .bind(&conflict.description)
        .bind(conflict.severity.as_str())
        .bind(Value::Object(conflict.metadata.as_map().clone()))
        .bind(conflict.status.as_str())
        .bind(conflict.source.as_str())
        .bind(uuids(&conflict.involved_agents, |a| a.as_uuid()))
        .bind(uuids(&conflict.involved_tasks, |t| t.as_uuid()))
        .bind(conflict.resource_id.map(|r| r.as_uuid()))
        .bind(conflict.resolution.as_ref().map(resolution_json))
        .bind(conflict.cause.as_ref().map(Cause::to_string))
        .bind(&conflict.reported_by)
        .bind(conflict.created_at)
        .bind(conflict.updated_at)
        .bind(conflict.resolved_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        if inserted.rows_affected() == 0 {
            return Err(RepoError::Conflict(
                "an open conflict with this cause exists".into(),
            ));
        }
        commit_with(self, tx, events).await
    }

    async fn get_conflict(&self, id: ConflictId) -> Result<Conflict, RepoError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM conflicts WHERE id = $1"))
            .bind(id.as_uuid())
            .read_one(self.pool(), conflict_from_row)
            .await
    }

    async fn list_conflicts(&self, query: &ConflictQuery) -> Result<Vec<Conflict>, RepoError> {
        let (after_at, after_id) = match &query.after {
            Some(c) => (Some(c.created_at), Some(c.id)),
            None => (None, None),
        };
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM conflicts
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::text IS NULL OR severity = $2)
               AND ($3::text IS NULL OR conflict_type = $3)
               AND ($4::uuid IS NULL OR agent_id = $4 OR involved_agents @> ARRAY[$4::uuid])
               AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
             ORDER BY created_at DESC, id DESC
             LIMIT $7"
        ))
        .bind(query.status.map(ConflictStatus::as_str))
        .bind(query.severity.map(|s| s.as_str()))
        .bind(query.conflict_type.map(ConflictType::as_str))
        .bind(query.agent.map(|a| a.as_uuid()))
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(query.limit))
        .read_all(self.pool(), conflict_from_row)
        .await
    }

    async fn open_detected(
        &self,
        types: &[ConflictType],
        limit: u32,
    ) -> Result<Vec<Conflict>, RepoError> {
        let types: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM conflicts
             WHERE status = 'open' AND source = 'detected' AND conflict_type = ANY($1)
             ORDER BY created_at, id
             LIMIT $2"
        ))
        .bind(types)
        .bind(i64::from(limit))
        .read_all(self.pool(), conflict_from_row)
        .await
    }

    async fn update_conflict(
        &self,
        conflict: &Conflict,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let updated = sqlx::query(
            "UPDATE conflicts SET description = $3, metadata = $4, status = $5,
                 involved_agents = $6, involved_tasks = $7, resolution = $8, updated_at = $9,
                 resolved_at = $10, version = version + 1
             WHERE id = $1 AND version = $2",
        )
        .bind(conflict.id.as_uuid())
        .bind(conflict.version)
        .bind(&conflict.description)
        .bind(Value::Object(conflict.metadata.as_map().clone()))
        .bind(conflict.status.as_str())
        .bind(uuids(&conflict.involved_agents, |a| a.as_uuid()))
        .bind(uuids(&conflict.involved_tasks, |t| t.as_uuid()))
        .bind(conflict.resolution.as_ref().map(resolution_json))
        .bind(conflict.updated_at)
        .bind(conflict.resolved_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        let ids = [conflict.id.as_uuid()];
        check_written(
            &mut tx,
            "conflicts",
            "conflict",
            &ids,
            updated.rows_affected(),
        )
        .await?;
        commit_with(self, tx, events).await
    }

    async fn count_conflicts(&self) -> Result<(u64, u64, u64), RepoError> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE status = 'open') AS open,
                    count(*) FILTER (WHERE status = 'resolved') AS resolved,
                    count(*) FILTER (WHERE status = 'dismissed') AS dismissed
             FROM conflicts",
        )
        .fetch_one(self.pool())
        .await
        .map_err(repo_error)?;
        let get = |c: &str| -> Result<u64, RepoError> {
            let n: i64 = row.try_get(c).map_err(repo_error)?;
            Ok(n.max(0) as u64)
        };
        Ok((get("open")?, get("resolved")?, get("dismissed")?))
    }
}
