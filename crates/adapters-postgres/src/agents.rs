//! Agents in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Agent, AgentId, AgentStatus, ApiKey, CapabilitySet, Metadata, NewEvent, ResourceMap};
use ports::{AgentQuery, AgentRepository, RepoError, StatusCounts};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::credentials::insert_key;
use crate::error::{check_written, corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::PgStore;

const COLUMNS: &str = "id, name, capabilities, resources, metadata, status, max_concurrent_tasks, \
                       current_tasks, reliability, created_at, updated_at, last_heartbeat, version";

fn agent_from_row(row: &PgRow) -> Result<Agent, RepoError> {
    let get_err = repo_error;
    let capabilities: Vec<String> = row.try_get("capabilities").map_err(get_err)?;
    let resources: Value = row.try_get("resources").map_err(get_err)?;
    let metadata: Value = row.try_get("metadata").map_err(get_err)?;
    let status: String = row.try_get("status").map_err(get_err)?;
    let to_u32 = |column: &str| -> Result<u32, RepoError> {
        let v: i32 = row.try_get(column).map_err(repo_error)?;
        u32::try_from(v).map_err(|e| corrupt(column, e))
    };
    Ok(Agent {
        id: AgentId(row.try_get("id").map_err(get_err)?),
        name: row.try_get("name").map_err(get_err)?,
        capabilities: CapabilitySet::parse("capabilities", &capabilities)
            .map_err(|e| corrupt("agent capabilities", e))?,
        resources: match &resources {
            Value::Object(map) => ResourceMap::from_stored_json("resources", map)
                .map_err(|e| corrupt("agent resources", e))?,
            other => return Err(corrupt("agent resources", other)),
        },
        metadata: match metadata {
            Value::Object(map) => Metadata::parse(map).map_err(|e| corrupt("agent metadata", e))?,
            other => return Err(corrupt("agent metadata", other)),
        },
        status: status
            .parse::<AgentStatus>()
            .map_err(|e| corrupt("agent status", e))?,
        max_concurrent_tasks: to_u32("max_concurrent_tasks")?,
        current_tasks: to_u32("current_tasks")?,
        reliability: row.try_get("reliability").map_err(get_err)?,
        created_at: row.try_get("created_at").map_err(get_err)?,
        updated_at: row.try_get("updated_at").map_err(get_err)?,
        last_heartbeat: row.try_get("last_heartbeat").map_err(get_err)?,
        version: row.try_get("version").map_err(get_err)?,
    })
}

fn as_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Writes every agent over the version it was read at, in one statement, inside the caller's
/// transaction. `NotFound` if one is gone, `Conflict` if one moved.
pub(crate) async fn update_agents(
    conn: &mut PgConnection,
    agents: &[Agent],
) -> Result<(), RepoError> {
    if agents.is_empty() {
        return Ok(());
    }
    // The IDs as an array too, so each row is reached by its key (see `update_tasks`).
    let ids: Vec<uuid::Uuid> = agents.iter().map(|a| a.id.as_uuid()).collect();
    let rows: Vec<Value> = agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id,
                "name": a.name,
                "capabilities": a.capabilities.to_strings(),
                "resources": a.resources.to_json(),
                "metadata": a.metadata.as_map(),
                "status": a.status.as_str(),
                "max_concurrent_tasks": a.max_concurrent_tasks,
                "current_tasks": a.current_tasks,
                "reliability": a.reliability,
                "created_at": a.created_at,
                "updated_at": a.updated_at,
                "last_heartbeat": a.last_heartbeat,
                "version": a.version,
            })
        })
        .collect();
    let written = sqlx::query(
        "UPDATE agents AS a SET name = r.name, capabilities = r.capabilities,
                resources = r.resources, metadata = r.metadata, status = r.status,
                max_concurrent_tasks = r.max_concurrent_tasks, current_tasks = r.current_tasks,
                reliability = r.reliability, updated_at = r.updated_at,
                last_heartbeat = r.last_heartbeat, version = a.version + 1
         FROM jsonb_populate_recordset(NULL::agents, $1) AS r
         WHERE a.id = ANY($2) AND a.id = r.id AND a.version = r.version",
    )
    .bind(Value::Array(rows))
    .bind(&ids)
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    check_written(conn, "agents", "agent", &ids, written.rows_affected()).await
}

/// Serving agents, locked for the rest of the caller's transaction; those another transaction
/// holds now (agents whose reports are being written) are left out rather than waited for.
pub(crate) async fn lock_serving(conn: &mut PgConnection) -> Result<Vec<Agent>, RepoError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM agents WHERE status IN ('idle', 'active', 'busy')
         ORDER BY id FOR UPDATE SKIP LOCKED"
    ))
    .read_all(conn, agent_from_row)
    .await
}

/// Those of `ids` that exist, locked in the order of their IDs until the caller's transaction
/// ends.
pub(crate) async fn lock_many(
    conn: &mut PgConnection,
    ids: &[AgentId],
) -> Result<Vec<Agent>, RepoError> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|a| a.as_uuid()).collect();
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM agents WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .read_all(conn, agent_from_row)
    .await
}

#[async_trait]
impl AgentRepository for PgStore {
    async fn insert(
        &self,
        agent: &Agent,
        key: &ApiKey,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        sqlx::query(&format!(
            "INSERT INTO agents ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0)"
        ))
        .bind(agent.id.as_uuid())
        .bind(&agent.name)
        .bind(agent.capabilities.to_strings())
        .bind(Value::Object(agent.resources.to_json()))
        .bind(Value::Object(agent.metadata.as_map().clone()))
        .bind(agent.status.as_str())
        .bind(as_i32(agent.max_concurrent_tasks))
        .bind(as_i32(agent.current_tasks))
        .bind(agent.reliability)
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .bind(agent.last_heartbeat)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        insert_key(&mut tx, key).await?;
        commit_with(self, tx, events).await
    }

    async fn get(&self, id: AgentId) -> Result<Agent, RepoError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM agents WHERE id = $1"))
            .bind(id.as_uuid())
            .read_one(self.pool(), agent_from_row)
            .await
    }

    async fn list(&self, query: &AgentQuery) -> Result<Vec<Agent>, RepoError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agents
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::text IS NULL OR capabilities @> ARRAY[$2::text])
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC
             LIMIT $5"
        ))
        .bind(query.status.map(|s| s.as_str()))
        .bind(query.capability.as_ref().map(|c| c.as_str()))
        .bind(query.after.map(|c| c.created_at))
        .bind(query.after.map(|c| c.id))
        .bind(i64::from(query.limit))
        .read_all(self.pool(), agent_from_row)
        .await
    }

    async fn update(
        &self,
        agent: &Agent,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        update_agents(&mut tx, std::slice::from_ref(agent)).await?;
        commit_with(self, tx, events).await
    }

    async fn delete(
        &self,
        agent: &Agent,
        revoked_at: DateTime<Utc>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let deleted = sqlx::query("DELETE FROM agents WHERE id = $1 AND version = $2")
            .bind(agent.id.as_uuid())
            .bind(agent.version)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        let ids = [agent.id.as_uuid()];
        check_written(&mut tx, "agents", "agent", &ids, deleted.rows_affected()).await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE agent_id = $1 AND revoked_at IS NULL",
        )
        .bind(agent.id.as_uuid())
        .bind(revoked_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        commit_with(self, tx, events).await
    }

    async fn record_heartbeats(
        &self,
        beats: &[(AgentId, DateTime<Utc>)],
    ) -> Result<u64, RepoError> {
        if beats.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = beats.iter().map(|(a, _)| a.as_uuid()).collect();
        let times: Vec<DateTime<Utc>> = beats.iter().map(|(_, at)| *at).collect();
        // In the order of the IDs, as every writer of several agents locks them.
        let written = sqlx::query(
            "WITH beat AS (
                 SELECT id, max(at) AS at FROM unnest($1::uuid[], $2::timestamptz[]) AS b(id, at)
                 GROUP BY id
             ),
             locked AS (
                 SELECT a.id FROM agents a JOIN beat USING (id)
                 WHERE a.last_heartbeat < beat.at
                 ORDER BY a.id FOR UPDATE OF a
             )
             UPDATE agents AS a
             SET last_heartbeat = greatest(a.last_heartbeat, beat.at),
                 updated_at = greatest(a.updated_at, beat.at),
                 version = a.version + 1
             FROM beat, locked
             WHERE a.id = beat.id AND a.id = locked.id AND a.last_heartbeat < beat.at",
        )
        .bind(&ids)
        .bind(&times)
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(written.rows_affected())
    }

    async fn heartbeat_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Agent>, RepoError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agents
             WHERE status IN ('idle', 'active', 'busy', 'draining') AND last_heartbeat <= $1
             ORDER BY last_heartbeat, id
             LIMIT $2"
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .read_all(self.pool(), agent_from_row)
        .await
    }

    async fn count_by_status(&self) -> Result<StatusCounts, RepoError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS n, coalesce(sum(current_tasks), 0)::bigint AS tasks,
                    coalesce(sum(max_concurrent_tasks), 0)::bigint AS slots
             FROM agents GROUP BY status",
        )
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?;
        let mut counts = StatusCounts::default();
        for row in rows {
            let status: String = row.try_get("status").map_err(repo_error)?;
            let n: i64 = row.try_get("n").map_err(repo_error)?;
            let tasks: i64 = row.try_get("tasks").map_err(repo_error)?;
            let status = status
                .parse::<AgentStatus>()
                .map_err(|e| corrupt("agent status", e))?;
            counts.add(status, u64::try_from(n).unwrap_or(0));
            counts.running_tasks += u64::try_from(tasks).unwrap_or(0);
            if status.is_online() {
                let slots: i64 = row.try_get("slots").map_err(repo_error)?;
                counts.slots += u64::try_from(slots).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    async fn capable_exists(&self, capabilities: &CapabilitySet) -> Result<bool, RepoError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agents WHERE capabilities @> $1)")
            .bind(capabilities.to_strings())
            .fetch_one(self.pool())
            .await
            .map_err(repo_error)
    }
}
