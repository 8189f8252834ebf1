//! Tasks as rows of the `tasks` table: the columns, reading and writing them, and the queries
//! the task, pool and scheduling modules share.

use chrono::{DateTime, Utc};
use domain::scheduler::Held;
use domain::{
    AgentId, CapabilitySet, Metadata, Priority, ResourceClaim, ResourceMap, Task, TaskId,
    TaskStatus,
};
use ports::RepoError;
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row};
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

/// A task's stored `resources`, read back.
fn resources_from(stored: Value) -> Result<ResourceMap, RepoError> {
    let Value::Object(map) = stored else {
        return Err(corrupt("task resources", stored));
    };
    ResourceMap::from_stored_json("resources", &map).map_err(|m| corrupt("task resources", m))
}

/// The columns of a held task a scheduling pass reads, for [`held_from_row`]: what its
/// holder's capacity needs, not the whole row.
pub(crate) const HELD_COLUMNS: &str = "id, assigned_agent, resources";

/// A held task as [`HELD_COLUMNS`] select it; a row no agent holds is corrupt here, since
/// only held rows are selected this way.
pub(crate) fn held_from_row(row: &PgRow) -> Result<Held, RepoError> {
    let agent: Option<Uuid> = row.try_get("assigned_agent").map_err(repo_error)?;
    Ok(Held {
        task: TaskId(row.try_get("id").map_err(repo_error)?),
        agent: AgentId(agent.ok_or_else(|| corrupt("held task", "no assigned agent"))?),
        resources: resources_from(row.try_get("resources").map_err(repo_error)?)?,
    })
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
        resources: resources_from(resources)?,
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

/// Tasks as one array per column of the `tasks` table, in the order of [`COLUMNS`], for
/// `UNNEST`: bound in PostgreSQL's binary format, so the database parses nothing but the values
/// of the JSON columns. (Rows passed as one JSON document were a fifth of its time on bulk
/// writes: the document built whole, every object's keys sorted, every scalar read back from
/// text.) The capabilities go as one space-separated text per task, since `UNNEST` flattens an
/// array of arrays; a capability holds no space.
struct TaskColumns<'a> {
    id: Vec<Uuid>,
    title: Vec<&'a str>,
    description: Vec<&'a str>,
    priority: Vec<i16>,
    required_capabilities: Vec<String>,
    resources: Vec<Json<Map<String, Value>>>,
    deadline: Vec<Option<DateTime<Utc>>>,
    metadata: Vec<Json<&'a Map<String, Value>>>,
    status: Vec<&'static str>,
    assigned_agent: Vec<Option<Uuid>>,
    attempt: Vec<i32>,
    max_attempts: Vec<i32>,
    lease_seconds: Vec<i32>,
    preemptible: Vec<bool>,
    lease_expires_at: Vec<Option<DateTime<Utc>>>,
    assigned_at: Vec<Option<DateTime<Utc>>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    progress: Vec<Option<f64>>,
    result: Vec<Option<Json<&'a Map<String, Value>>>>,
    error: Vec<Option<&'a str>>,
    resource_claims: Vec<Json<Value>>,
    workflow_id: Vec<Option<Uuid>>,
    execution_id: Vec<Option<Uuid>>,
    step: Vec<Option<&'a str>>,
    wait_reason: Vec<Option<Json<Value>>>,
    pending_reason: Vec<Option<String>>,
    not_before: Vec<DateTime<Utc>>,
    cancel_requested: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    round_start: Vec<i32>,
    version: Vec<i64>,
}

/// `UNNEST` of the bound [`TaskColumns`] (`$1` to `$33`) as the rows `r`, with the columns
/// of the `tasks` table, the capabilities still as text.
const UNNEST_TASKS: &str = "UNNEST($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[],
        $6::jsonb[], $7::timestamptz[], $8::jsonb[], $9::text[], $10::uuid[], $11::int4[],
        $12::int4[], $13::int4[], $14::bool[], $15::timestamptz[], $16::timestamptz[],
        $17::timestamptz[], $18::timestamptz[], $19::float8[], $20::jsonb[], $21::text[],
        $22::jsonb[], $23::uuid[], $24::uuid[], $25::text[], $26::jsonb[], $27::text[],
        $28::timestamptz[], $29::bool[], $30::timestamptz[], $31::timestamptz[], $32::int4[],
        $33::int8[])
    AS r(id, title, description, priority, required_capabilities, resources, deadline,
        metadata, status, assigned_agent, attempt, max_attempts, lease_seconds, preemptible,
        lease_expires_at, assigned_at, started_at, completed_at, progress, result, error,
        resource_claims, workflow_id, execution_id, step, wait_reason, pending_reason,
        not_before, cancel_requested, created_at, updated_at, round_start, version)";

/// A count or limit as PostgreSQL's `integer` (the domain keeps them far below its range; one
/// above it is refused, never written as another number).
fn int4(n: u32) -> Result<i32, RepoError> {
    i32::try_from(n).map_err(|_| RepoError::Internal(format!("{n} is out of an integer's range")))
}

impl<'a> TaskColumns<'a> {
    fn of(tasks: impl ExactSizeIterator<Item = &'a Task>) -> Result<Self, RepoError> {
        let n = tasks.len();
        let mut c = Self {
            id: Vec::with_capacity(n),
            title: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            priority: Vec::with_capacity(n),
            required_capabilities: Vec::with_capacity(n),
            resources: Vec::with_capacity(n),
            deadline: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            assigned_agent: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            lease_seconds: Vec::with_capacity(n),
            preemptible: Vec::with_capacity(n),
            lease_expires_at: Vec::with_capacity(n),
            assigned_at: Vec::with_capacity(n),
            started_at: Vec::with_capacity(n),
            completed_at: Vec::with_capacity(n),
            progress: Vec::with_capacity(n),
            result: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            resource_claims: Vec::with_capacity(n),
            workflow_id: Vec::with_capacity(n),
            execution_id: Vec::with_capacity(n),
            step: Vec::with_capacity(n),
            wait_reason: Vec::with_capacity(n),
            pending_reason: Vec::with_capacity(n),
            not_before: Vec::with_capacity(n),
            cancel_requested: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            updated_at: Vec::with_capacity(n),
            round_start: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
        };
        for t in tasks {
            c.id.push(t.id.as_uuid());
            c.title.push(&t.title);
            c.description.push(&t.description);
            c.priority.push(i16::from(t.priority.get()));
            c.required_capabilities
                .push(t.required_capabilities.to_strings().join(" "));
            c.resources.push(Json(t.resources.to_json()));
            c.deadline.push(t.deadline);
            c.metadata.push(Json(t.metadata.as_map()));
            c.status.push(t.status.as_str());
            c.assigned_agent.push(t.assigned_agent.map(|a| a.as_uuid()));
            c.attempt.push(int4(t.attempt)?);
            c.max_attempts.push(int4(t.max_attempts)?);
            c.lease_seconds.push(int4(t.lease_seconds)?);
            c.preemptible.push(t.preemptible);
            c.lease_expires_at.push(t.lease_expires_at);
            c.assigned_at.push(t.assigned_at);
            c.started_at.push(t.started_at);
            c.completed_at.push(t.completed_at);
            c.progress.push(t.progress);
            c.result.push(t.result.as_ref().map(Json));
            c.error.push(t.error.as_deref());
            c.resource_claims
                .push(Json(claims_json(&t.resource_claims)));
            c.workflow_id.push(t.workflow_id);
            c.execution_id.push(t.execution_id);
            c.step.push(t.step.as_deref());
            c.wait_reason
                .push(wait_reason_json(&t.pending_reason).map(Json));
            c.pending_reason
                .push(t.pending_reason.as_ref().map(|r| r.to_string()));
            c.not_before.push(t.not_before);
            c.cancel_requested.push(t.cancel_requested);
            c.created_at.push(t.created_at);
            c.updated_at.push(t.updated_at);
            c.round_start.push(int4(t.round_start)?);
            c.version.push(t.version);
        }
        Ok(c)
    }

    /// Binds every column, `$1` to `$33`, as [`UNNEST_TASKS`] reads them.
    fn bind<'q>(self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.id)
            .bind(self.title)
            .bind(self.description)
            .bind(self.priority)
            .bind(self.required_capabilities)
            .bind(self.resources)
            .bind(self.deadline)
            .bind(self.metadata)
            .bind(self.status)
            .bind(self.assigned_agent)
            .bind(self.attempt)
            .bind(self.max_attempts)
            .bind(self.lease_seconds)
            .bind(self.preemptible)
            .bind(self.lease_expires_at)
            .bind(self.assigned_at)
            .bind(self.started_at)
            .bind(self.completed_at)
            .bind(self.progress)
            .bind(self.result)
            .bind(self.error)
            .bind(self.resource_claims)
            .bind(self.workflow_id)
            .bind(self.execution_id)
            .bind(self.step)
            .bind(self.wait_reason)
            .bind(self.pending_reason)
            .bind(self.not_before)
            .bind(self.cancel_requested)
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.round_start)
            .bind(self.version)
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
    let mut columns = TaskColumns::of(tasks.iter().copied())?;
    columns.version.iter_mut().for_each(|v| *v = 0);
    let values = COLUMNS.replace(
        "required_capabilities",
        "string_to_array(required_capabilities, ' ')",
    );
    let sql = format!("INSERT INTO tasks ({COLUMNS}) SELECT {values} FROM {UNNEST_TASKS}");
    columns
        .bind(sqlx::query(&sql))
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
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id.as_uuid()).collect();
    // `t.id = ANY($1)` (the IDs bound as the first column): the planner reaches each row by
    // its key, never by a scan of the whole table.
    let sql = format!(
        "UPDATE tasks AS t SET title = r.title, description = r.description,
                priority = r.priority,
                required_capabilities = string_to_array(r.required_capabilities, ' '),
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
         FROM {UNNEST_TASKS}
         WHERE t.id = ANY($1) AND t.id = r.id AND t.version = r.version"
    );
    let written = TaskColumns::of(tasks.iter())?
        .bind(sqlx::query(&sql))
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
        SelectBinds::Nothing => query,
    };
    query.read_all(conn, task_from_row).await
}

pub(crate) enum SelectBinds {
    TimeLimit(DateTime<Utc>, u32),
    Agent(AgentId),
    Nothing,
}
