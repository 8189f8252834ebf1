//! Tasks as rows of the `tasks` table: the columns, reading and writing them, and the queries
//! the task, pool and scheduling modules share.

use chrono::{DateTime, Utc};
use domain::{
    AgentId, CapabilitySet, Metadata, Priority, ResourceClaim, ResourceMap, Task, TaskId,
    TaskStatus,
};
use ports::RepoError;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{check_written, corrupt, repo_error};
use crate::rows::ReadRows;

pub(crate) const COLUMNS: &str =
    "id, title, description, priority, required_capabilities, resources, deadline, \
    metadata, status, assigned_agent, attempt, max_attempts, lease_seconds, preemptible, \
    lease_expires_at, assigned_at, started_at, completed_at, progress, result, error, \
    resource_claims, workflow_id, execution_id, step, wait_reason, pending_reason, not_before, \
    cancel_requested, created_at, updated_at, round_start, version";

/// Why a pending task waits, as stored: the reason's value, tagged by its kind. (The
/// `pending_reason` column beside it keeps the sentence, for replicas of earlier versions.)
pub(crate) fn wait_reason_json(reason: &Option<domain::WaitReason>) -> Option<Value> {
    reason
        .as_ref()
        .map(|r| serde_json::to_value(r).expect("a wait reason is plain data"))
}

/// A stored reason, read back. One of a kind this version does not know (a later version wrote
/// it) is read as no reason: the next scheduling pass that sees the task writes its own.
fn wait_reason_from(stored: Option<Value>) -> Option<domain::WaitReason> {
    let stored = stored?;
    match serde_json::from_value(stored) {
        Ok(reason) => Some(reason),
        Err(e) => {
            tracing::debug!(error = %e, "a stored wait reason of an unknown kind is ignored");
            None
        }
    }
}

pub(crate) fn claims_json(claims: &[ResourceClaim]) -> Value {
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

pub(crate) fn task_from_row(row: &PgRow) -> Result<Task, RepoError> {
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
        pending_reason: wait_reason_from(
            row.try_get::<Option<Value>, _>("wait_reason").map_err(e)?,
        ),
        not_before: row.try_get("not_before").map_err(e)?,
        cancel_requested: row.try_get("cancel_requested").map_err(e)?,
        created_at: row.try_get("created_at").map_err(e)?,
        updated_at: row.try_get("updated_at").map_err(e)?,
        version: row.try_get("version").map_err(e)?,
    })
}

/// A task as a row of the `tasks` table, in JSON, for `jsonb_populate_recordset`: serialized
/// straight from the task, with no JSON tree built first.
#[derive(serde::Serialize)]
struct TaskRow<'a> {
    id: TaskId,
    title: &'a str,
    description: &'a str,
    priority: u8,
    required_capabilities: Vec<String>,
    resources: Map<String, Value>,
    deadline: Option<DateTime<Utc>>,
    metadata: &'a Map<String, Value>,
    status: &'static str,
    assigned_agent: Option<AgentId>,
    attempt: u32,
    round_start: u32,
    max_attempts: u32,
    lease_seconds: u32,
    preemptible: bool,
    lease_expires_at: Option<DateTime<Utc>>,
    assigned_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    progress: Option<f64>,
    result: Option<&'a Map<String, Value>>,
    error: Option<&'a str>,
    resource_claims: Value,
    workflow_id: Option<Uuid>,
    execution_id: Option<Uuid>,
    step: Option<&'a str>,
    wait_reason: Option<Value>,
    pending_reason: Option<String>,
    not_before: DateTime<Utc>,
    cancel_requested: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl<'a> TaskRow<'a> {
    fn of(t: &'a Task) -> Self {
        Self {
            id: t.id,
            title: &t.title,
            description: &t.description,
            priority: t.priority.get(),
            required_capabilities: t.required_capabilities.to_strings(),
            resources: t.resources.to_json(),
            deadline: t.deadline,
            metadata: t.metadata.as_map(),
            status: t.status.as_str(),
            assigned_agent: t.assigned_agent,
            attempt: t.attempt,
            round_start: t.round_start,
            max_attempts: t.max_attempts,
            lease_seconds: t.lease_seconds,
            preemptible: t.preemptible,
            lease_expires_at: t.lease_expires_at,
            assigned_at: t.assigned_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            progress: t.progress,
            result: t.result.as_ref(),
            error: t.error.as_deref(),
            resource_claims: claims_json(&t.resource_claims),
            workflow_id: t.workflow_id,
            execution_id: t.execution_id,
            step: t.step.as_deref(),
            wait_reason: wait_reason_json(&t.pending_reason),
            pending_reason: t.pending_reason.as_ref().map(|r| r.to_string()),
            not_before: t.not_before,
            cancel_requested: t.cancel_requested,
            created_at: t.created_at,
            updated_at: t.updated_at,
            version: t.version,
        }
    }
}

/// Inserts new tasks (`version` 0), in one statement, inside the caller's transaction.
/// `Conflict` if one of their IDs is taken.
pub(crate) async fn insert_tasks(
    conn: &mut PgConnection,
    tasks: &[&Task],
) -> Result<(), RepoError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let rows: Vec<TaskRow> = tasks
        .iter()
        .map(|t| TaskRow {
            version: 0,
            ..TaskRow::of(t)
        })
        .collect();
    sqlx::query(&format!(
        "INSERT INTO tasks ({COLUMNS})
         SELECT {COLUMNS} FROM jsonb_populate_recordset(NULL::tasks, $1)"
    ))
    .bind(sqlx::types::Json(&rows))
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    Ok(())
}

/// Writes every task over the version it was read at, in one statement, inside the caller's
/// transaction. `NotFound` if one is gone, `Conflict` if one moved.
pub(crate) async fn update_tasks(conn: &mut PgConnection, tasks: &[Task]) -> Result<(), RepoError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let rows: Vec<TaskRow> = tasks.iter().map(TaskRow::of).collect();
    // The IDs as an array too: the planner reaches each row by its key, never by a scan of
    // the whole table (it cannot see how few rows the JSON holds).
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id.as_uuid()).collect();
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
                wait_reason = r.wait_reason, pending_reason = r.pending_reason,
                not_before = r.not_before,
                cancel_requested = r.cancel_requested, updated_at = r.updated_at,
                version = t.version + 1
         FROM jsonb_populate_recordset(NULL::tasks, $1) AS r
         WHERE t.id = ANY($2) AND t.id = r.id AND t.version = r.version",
    )
    .bind(sqlx::types::Json(&rows))
    .bind(&ids)
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    check_written(conn, "tasks", "task", &ids, written.rows_affected()).await
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

pub(crate) async fn select(
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
    query.read_all(conn, task_from_row).await
}

pub(crate) enum SelectBinds {
    TimeLimit(DateTime<Utc>, u32),
    Agent(AgentId),
    Agents(Vec<Uuid>),
    Nothing,
}
