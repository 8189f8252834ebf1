//! Tasks in PostgreSQL, and the scheduling pass.
//!
//! A pass holds a transaction-scoped advisory lock, so passes never overlap across replicas; it
//! locks the serving agents and the pending tasks it reads (`FOR UPDATE`, skipping tasks another
//! transaction holds), so its writes cannot lose a race and no task is assigned twice.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    AgentId, CapabilitySet, Metadata, NewEvent, Priority, ResourceClaim, ResourceMap, Task, TaskId,
    TaskStatus,
};
use ports::{
    Changes, Decide, IdempotencyRecord, RepoError, SchedulingSnapshot, TaskCounts, TaskQuery,
    TaskRepository,
};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::agents::{lock_serving, update_agents};
use crate::error::{corrupt, repo_error};
use crate::events::append;
use crate::resources::{lock_pools, mark_allocated};
use crate::PgStore;

/// The key of the advisory lock that serializes scheduling passes.
const SCHEDULER_LOCK: i64 = 0x5343_4845_4455_4c45; // "SCHEDULE"

const COLUMNS: &str =
    "id, title, description, priority, required_capabilities, resources, deadline, \
    metadata, status, assigned_agent, attempt, max_attempts, lease_seconds, preemptible, \
    lease_expires_at, assigned_at, started_at, completed_at, progress, result, error, \
    resource_claims, workflow_id, execution_id, step, wait_reason, not_before, \
    cancel_requested, created_at, updated_at, round_start, version";

/// Why a pending task waits, as stored: the reason's value, tagged by its kind.
fn wait_reason_json(reason: &Option<domain::WaitReason>) -> Option<Value> {
    reason.as_ref().and_then(|r| serde_json::to_value(r).ok())
}

fn claims_json(claims: &[ResourceClaim]) -> Value {
    Value::Array(
        claims
            .iter()
            .map(|c| json!({"resource_id": c.resource, "amount": c.amount.to_json()}))
            .collect(),
    )
}

fn claims_from(value: Value) -> Result<Vec<ResourceClaim>, RepoError> {
    let bad = |d: &dyn std::fmt::Display| corrupt("task resource claims", d.to_string());
    let Value::Array(items) = value else {
        return Err(bad(&"not an array"));
    };
    items
        .into_iter()
        .map(|item| {
            let resource = item["resource_id"]
                .as_str()
                .ok_or_else(|| bad(&"no resource_id"))?;
            let amount = item["amount"]
                .as_object()
                .ok_or_else(|| bad(&"no amount"))?;
            Ok(ResourceClaim {
                resource: resource.to_owned(),
                amount: ResourceMap::from_stored_json("amount", amount).map_err(|e| bad(&e))?,
            })
        })
        .collect()
}

fn task_from_row(row: &PgRow) -> Result<Task, RepoError> {
    let e = repo_error;
    let caps: Vec<String> = row.try_get("required_capabilities").map_err(e)?;
    let resources: Value = row.try_get("resources").map_err(e)?;
    let metadata: Value = row.try_get("metadata").map_err(e)?;
    let status: String = row.try_get("status").map_err(e)?;
    let priority: i16 = row.try_get("priority").map_err(e)?;
    let result: Option<Value> = row.try_get("result").map_err(e)?;
    let to_u32 = |column: &str| -> Result<u32, RepoError> {
        let v: i32 = row.try_get(column).map_err(repo_error)?;
        u32::try_from(v).map_err(|err| corrupt(column, err))
    };
    let object = |what: &str, v: Value| match v {
        Value::Object(map) => Ok(map),
        other => Err(corrupt(what, other)),
    };
    Ok(Task {
        id: TaskId(row.try_get("id").map_err(e)?),
        title: row.try_get("title").map_err(e)?,
        description: row.try_get("description").map_err(e)?,
        priority: Priority::new(i64::from(priority)).map_err(|m| corrupt("task priority", m))?,
        required_capabilities: CapabilitySet::parse("required_capabilities", &caps)
            .map_err(|m| corrupt("task capabilities", m))?,
        resources: ResourceMap::from_stored_json(
            "resources",
            &object("task resources", resources)?,
        )
        .map_err(|m| corrupt("task resources", m))?,
        deadline: row.try_get("deadline").map_err(e)?,
        metadata: Metadata::parse(object("task metadata", metadata)?)
            .map_err(|m| corrupt("task metadata", m))?,
        status: status
            .parse::<TaskStatus>()
            .map_err(|m| corrupt("task status", m))?,
        assigned_agent: row
            .try_get::<Option<Uuid>, _>("assigned_agent")
            .map_err(e)?
            .map(AgentId),
        attempt: to_u32("attempt")?,
        round_start: to_u32("round_start")?,
        max_attempts: to_u32("max_attempts")?,
        lease_seconds: to_u32("lease_seconds")?,
        preemptible: row.try_get("preemptible").map_err(e)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(e)?,
        assigned_at: row.try_get("assigned_at").map_err(e)?,
        started_at: row.try_get("started_at").map_err(e)?,
        completed_at: row.try_get("completed_at").map_err(e)?,
        progress: row.try_get("progress").map_err(e)?,
        result: result.map(|v| object("task result", v)).transpose()?,
        error: row.try_get("error").map_err(e)?,
        resource_claims: claims_from(row.try_get("resource_claims").map_err(e)?)?,
        workflow_id: row.try_get("workflow_id").map_err(e)?,
        execution_id: row.try_get("execution_id").map_err(e)?,
        step: row.try_get("step").map_err(e)?,
        pending_reason: row
            .try_get::<Option<Value>, _>("wait_reason")
            .map_err(e)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|m| corrupt("task wait reason", m))?,
        not_before: row.try_get("not_before").map_err(e)?,
        cancel_requested: row.try_get("cancel_requested").map_err(e)?,
        created_at: row.try_get("created_at").map_err(e)?,
        updated_at: row.try_get("updated_at").map_err(e)?,
        version: row.try_get("version").map_err(e)?,
    })
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Binds every column but `version`, in `COLUMNS` order, as `$1..$31`.
macro_rules! bind_task {
    ($query:expr, $t:expr) => {
        $query
            .bind($t.id.as_uuid())
            .bind(&$t.title)
            .bind(&$t.description)
            .bind(i16::from($t.priority.get()))
            .bind($t.required_capabilities.to_strings())
            .bind(Value::Object($t.resources.to_json()))
            .bind($t.deadline)
            .bind(Value::Object($t.metadata.as_map().clone()))
            .bind($t.status.as_str())
            .bind($t.assigned_agent.map(|a| a.as_uuid()))
            .bind(i32_of($t.attempt))
            .bind(i32_of($t.max_attempts))
            .bind(i32_of($t.lease_seconds))
            .bind($t.preemptible)
            .bind($t.lease_expires_at)
            .bind($t.assigned_at)
            .bind($t.started_at)
            .bind($t.completed_at)
            .bind($t.progress)
            .bind($t.result.clone().map(Value::Object))
            .bind(&$t.error)
            .bind(claims_json(&$t.resource_claims))
            .bind($t.workflow_id)
            .bind($t.execution_id)
            .bind(&$t.step)
            .bind(wait_reason_json(&$t.pending_reason))
            .bind($t.not_before)
            .bind($t.cancel_requested)
            .bind($t.created_at)
            .bind($t.updated_at)
            .bind(i32_of($t.round_start))
    };
}

/// A task as a row of the `tasks` table, in JSON, for `jsonb_populate_recordset`.
fn task_row(t: &Task) -> Value {
    json!({
        "id": t.id,
        "title": t.title,
        "description": t.description,
        "priority": t.priority.get(),
        "required_capabilities": t.required_capabilities.to_strings(),
        "resources": t.resources.to_json(),
        "deadline": t.deadline,
        "metadata": t.metadata.as_map(),
        "status": t.status.as_str(),
        "assigned_agent": t.assigned_agent,
        "attempt": t.attempt,
        "round_start": t.round_start,
        "max_attempts": t.max_attempts,
        "lease_seconds": t.lease_seconds,
        "preemptible": t.preemptible,
        "lease_expires_at": t.lease_expires_at,
        "assigned_at": t.assigned_at,
        "started_at": t.started_at,
        "completed_at": t.completed_at,
        "progress": t.progress,
        "result": t.result,
        "error": t.error,
        "resource_claims": claims_json(&t.resource_claims),
        "workflow_id": t.workflow_id,
        "execution_id": t.execution_id,
        "step": t.step,
        "wait_reason": wait_reason_json(&t.pending_reason),
        "not_before": t.not_before,
        "cancel_requested": t.cancel_requested,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "version": t.version,
    })
}

/// Writes every task over the version it was read at, in one statement, inside the caller's
/// transaction. `NotFound` if one is gone, `Conflict` if one moved.
async fn update_tasks(conn: &mut PgConnection, tasks: &[Task]) -> Result<(), RepoError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(tasks.iter().map(task_row).collect());
    let written = sqlx::query(
        "UPDATE tasks AS t SET title = r.title, description = r.description,
                priority = r.priority, required_capabilities = r.required_capabilities,
                resources = r.resources, deadline = r.deadline, metadata = r.metadata,
                status = r.status, assigned_agent = r.assigned_agent, attempt = r.attempt,
                round_start = r.round_start, max_attempts = r.max_attempts,
                lease_seconds = r.lease_seconds,
                preemptible = r.preemptible, lease_expires_at = r.lease_expires_at,
                assigned_at = r.assigned_at, started_at = r.started_at,
                completed_at = r.completed_at, progress = r.progress, result = r.result,
                error = r.error, resource_claims = r.resource_claims,
                workflow_id = r.workflow_id, execution_id = r.execution_id, step = r.step,
                wait_reason = r.wait_reason, not_before = r.not_before,
                cancel_requested = r.cancel_requested, updated_at = r.updated_at,
                version = t.version + 1
         FROM jsonb_populate_recordset(NULL::tasks, $1) AS r
         WHERE t.id = r.id AND t.version = r.version",
    )
    .bind(rows)
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    if written.rows_affected() == tasks.len() as u64 {
        return Ok(());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id.as_uuid()).collect();
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(conn)
        .await
        .map_err(repo_error)?;
    Err(if present < ids.len() as i64 {
        RepoError::NotFound
    } else {
        RepoError::Conflict("a task changed since it was read".into())
    })
}

/// Writes a set of changes inside the caller's transaction: one statement per kind of row.
async fn write(conn: &mut PgConnection, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
    update_tasks(conn, &changes.tasks).await?;
    update_agents(conn, &changes.agents).await?;
    mark_allocated(conn, &changes.allocated_from).await?;
    append(conn, changes.events).await
}

/// The assigned and running tasks that claim a pool: the live allocations.
pub(crate) async fn claim_holders(conn: &mut PgConnection) -> Result<Vec<Task>, RepoError> {
    select(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE status IN ('assigned', 'running') AND resource_claims <> '[]'::jsonb"
        ),
        SelectBinds::Nothing,
    )
    .await
}

async fn select(
    conn: &mut PgConnection,
    sql: &str,
    binds: SelectBinds,
) -> Result<Vec<Task>, RepoError> {
    let query = sqlx::query(sql);
    let query = match binds {
        SelectBinds::TimeLimit(at, limit) => query.bind(at).bind(i64::from(limit)),
        SelectBinds::Agent(agent) => query.bind(agent.as_uuid()),
        SelectBinds::Agents(ids) => query.bind(ids),
        SelectBinds::Nothing => query,
    };
    query
        .fetch_all(conn)
        .await
        .map_err(repo_error)?
        .iter()
        .map(task_from_row)
        .collect()
}

enum SelectBinds {
    TimeLimit(DateTime<Utc>, u32),
    Agent(AgentId),
    Agents(Vec<Uuid>),
    Nothing,
}

#[async_trait]
impl TaskRepository for PgStore {
    async fn insert(
        &self,
        task: &Task,
        events: Vec<NewEvent>,
        idempotency: Option<(&IdempotencyRecord, chrono::Duration)>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        if let Some((record, lifetime)) = idempotency {
            // Takes the key, or a stale record of it; a live one stops the insert.
            let taken = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, task_id, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE
                     SET fingerprint = EXCLUDED.fingerprint, task_id = EXCLUDED.task_id,
                         created_at = EXCLUDED.created_at
                     WHERE idempotency_keys.created_at < $5",
            )
            .bind(&record.key)
            .bind(&record.fingerprint)
            .bind(record.task.as_uuid())
            .bind(record.created_at)
            .bind(record.created_at - lifetime)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
            if taken.rows_affected() == 0 {
                return Err(RepoError::Conflict("idempotency key in use".into()));
            }
        }
        bind_task!(
            sqlx::query(&format!(
                "INSERT INTO tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
                 $27, $28, $29, $30, $31, 0)"
            )),
            task
        )
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        let stored = append(&mut tx, events).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(stored)
    }

    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(self.pool())
            .await
            .map_err(repo_error)?;
        row.as_ref()
            .map(task_from_row)
            .unwrap_or(Err(RepoError::NotFound))
    }

    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, task_id, created_at FROM idempotency_keys
             WHERE key = $1 AND created_at >= $2",
        )
        .bind(key)
        .bind(since)
        .fetch_optional(self.pool())
        .await
        .map_err(repo_error)?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                key: row.try_get("key").map_err(repo_error)?,
                fingerprint: row.try_get("fingerprint").map_err(repo_error)?,
                task: TaskId(row.try_get("task_id").map_err(repo_error)?),
                created_at: row.try_get("created_at").map_err(repo_error)?,
            })
        })
        .transpose()
    }

    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::smallint IS NULL OR priority = $2)
               AND ($3::text IS NULL OR required_capabilities @> ARRAY[$3::text])
               AND ($4::uuid IS NULL OR assigned_agent = $4)
               AND ($5::uuid IS NULL OR workflow_id = $5)
               AND ($6::uuid IS NULL OR execution_id = $6)
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
             ORDER BY created_at DESC, id DESC
             LIMIT $9"
        ))
        .bind(query.status.map(|s| s.as_str()))
        .bind(query.priority.map(|p| i16::from(p.get())))
        .bind(query.capability.as_ref().map(|c| c.as_str()))
        .bind(query.agent.map(|a| a.as_uuid()))
        .bind(query.workflow_id)
        .bind(query.execution_id)
        .bind(query.after.map(|c| c.created_at))
        .bind(query.after.map(|c| c.id))
        .bind(i64::from(query.limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?
        .iter()
        .map(task_from_row)
        .collect()
    }

    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let stored = write(&mut tx, changes).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(stored)
    }

    async fn schedule(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEDULER_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        let agents = lock_serving(&mut tx).await?;
        let ids: Vec<Uuid> = agents.iter().map(|a| a.id.as_uuid()).collect();
        let held = select(
            &mut tx,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status IN ('assigned', 'running') AND assigned_agent = ANY($1)"
            ),
            SelectBinds::Agents(ids),
        )
        .await?;
        // The same effective priority as `domain::scheduler::effective_priority`, so the batch
        // holds the tasks the scheduler would take first: aging and deadlines lift old and
        // urgent tasks into it however many higher-priority tasks wait.
        let pending = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE status = 'pending' AND not_before <= $1 AND (deadline IS NULL OR deadline > $1)
             ORDER BY priority
                      + LEAST(GREATEST(extract(epoch FROM ($1 - created_at)), 0) / $3, $4)
                      + CASE WHEN deadline IS NULL THEN 0
                             WHEN extract(epoch FROM (deadline - $1)) < $5
                             THEN $6 * (1 - extract(epoch FROM (deadline - $1)) / $5)
                             ELSE 0 END DESC,
                      deadline NULLS LAST, created_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .bind(policy.aging_step.num_milliseconds().max(1) as f64 / 1000.0)
        .bind(policy.max_aging)
        .bind(policy.urgency_horizon.num_milliseconds().max(1) as f64 / 1000.0)
        .bind(policy.max_urgency)
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_error)?
        .iter()
        .map(task_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        // Pools are read (and locked) only when a task in the batch claims one.
        let (resources, claim_holders) = if pending.iter().any(|t| !t.resource_claims.is_empty()) {
            (lock_pools(&mut tx).await?, claim_holders(&mut tx).await?)
        } else {
            Default::default()
        };
        let changes = decide(SchedulingSnapshot {
            pending,
            agents,
            held,
            resources,
            claim_holders,
        });
        let stored = write(&mut tx, changes).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(stored)
    }

    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status IN ('assigned', 'running') AND lease_expires_at <= $1
                 ORDER BY lease_expires_at, id LIMIT $2"
            ),
            SelectBinds::TimeLimit(now, limit),
        )
        .await
    }

    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status = 'pending' AND deadline <= $1
                 ORDER BY deadline, id LIMIT $2"
            ),
            SelectBinds::TimeLimit(now, limit),
        )
        .await
    }

    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status IN ('assigned', 'running') AND assigned_agent = $1
                 ORDER BY assigned_at, id"
            ),
            SelectBinds::Agent(agent),
        )
        .await
    }

    async fn count_by_status(&self) -> Result<TaskCounts, RepoError> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM tasks GROUP BY status")
            .fetch_all(self.pool())
            .await
            .map_err(repo_error)?;
        let mut counts = TaskCounts::default();
        for row in rows {
            let status: String = row.try_get("status").map_err(repo_error)?;
            let n: i64 = row.try_get("n").map_err(repo_error)?;
            let status = status
                .parse::<TaskStatus>()
                .map_err(|m| corrupt("task status", m))?;
            counts.add(status, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        // The kinds are written into the statement, so it matches the partial index on them.
        let kinds: Vec<String> = domain::WaitReason::CAPABILITY_GAP_KINDS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect();
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE status = 'pending' AND wait_reason->>'kind' IN ({})
             ORDER BY created_at, id LIMIT $1",
            kinds.join(", ")
        ))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?
        .iter()
        .map(task_from_row)
        .collect()
    }
}
