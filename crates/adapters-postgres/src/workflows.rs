//! Workflows and their executions in PostgreSQL, and how a write moves the executions of the
//! steps it ends.
//!
//! An execution's row is its lock: a write that ends a step's task locks the execution (after
//! the agents and tasks it holds, the order every write takes), decides with
//! `Execution::follow`, and writes the execution, the tasks it queues and the ones it cancels
//! in the same transaction.

use std::collections::HashSet;

use async_trait::async_trait;
use domain::workflow::{moved_steps, Rerun, StepInput, StepRun, WorkflowInput};
use domain::{
    Cursor, Execution, ExecutionId, ExecutionStatus, Metadata, NewEvent, Task, TaskId, Workflow,
    WorkflowId,
};
use ports::{Changes, RepoError, WorkflowCounts, WorkflowRepository};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{check_written, corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::task_rows::{insert_tasks, task_from_row, COLUMNS as TASK_COLUMNS};
use crate::PgStore;

const WORKFLOW_COLUMNS: &str = "id, name, description, steps, metadata, created_at";
const EXECUTION_COLUMNS: &str = "id, workflow_id, status, parameters, metadata, steps, reruns, \
    created_at, completed_at, updated_at, version";
/// [`EXECUTION_COLUMNS`] as lists read them: each step without its result.
const LISTED_EXECUTION_COLUMNS: &str = "id, workflow_id, status, parameters, metadata, \
    (SELECT coalesce(jsonb_agg(s - 'result' ORDER BY n), '[]'::jsonb)
     FROM jsonb_array_elements(steps) WITH ORDINALITY AS e(s, n)) AS steps, \
    reruns, created_at, completed_at, updated_at, version";

fn object(what: &str, value: Value) -> Result<serde_json::Map<String, Value>, RepoError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(corrupt(what, other)),
    }
}

/// A stored definition, read back through the checks a new one passes.
fn workflow_from_row(row: &PgRow) -> Result<Workflow, RepoError> {
    let e = repo_error;
    let steps: Value = row.try_get("steps").map_err(e)?;
    let steps: Vec<StepInput> =
        serde_json::from_value(steps).map_err(|err| corrupt("workflow steps", err))?;
    let input = WorkflowInput {
        name: row.try_get("name").map_err(e)?,
        description: Some(row.try_get("description").map_err(e)?),
        steps,
        metadata: object("workflow metadata", row.try_get("metadata").map_err(e)?)?,
    };
    Workflow::parse(
        input,
        WorkflowId(row.try_get("id").map_err(e)?),
        row.try_get("created_at").map_err(e)?,
    )
    .map_err(|errors| corrupt("workflow", errors))
}

fn execution_from_row(row: &PgRow) -> Result<Execution, RepoError> {
    let e = repo_error;
    let status: String = row.try_get("status").map_err(e)?;
    let steps: Vec<StepRun> = serde_json::from_value(row.try_get("steps").map_err(e)?)
        .map_err(|err| corrupt("execution steps", err))?;
    let reruns: Vec<Rerun> = serde_json::from_value(row.try_get("reruns").map_err(e)?)
        .map_err(|err| corrupt("execution reruns", err))?;
    let metadata = |column: &str| -> Result<Metadata, RepoError> {
        let value = object(column, row.try_get(column).map_err(repo_error)?)?;
        Metadata::parse(value).map_err(|m| corrupt(column, m))
    };
    Ok(Execution {
        id: ExecutionId(row.try_get("id").map_err(e)?),
        workflow_id: WorkflowId(row.try_get("workflow_id").map_err(e)?),
        status: status
            .parse::<ExecutionStatus>()
            .map_err(|m| corrupt("execution status", m))?,
        parameters: metadata("parameters")?,
        metadata: metadata("metadata")?,
        steps,
        reruns,
        created_at: row.try_get("created_at").map_err(e)?,
        completed_at: row.try_get("completed_at").map_err(e)?,
        updated_at: row.try_get("updated_at").map_err(e)?,
        version: row.try_get("version").map_err(e)?,
    })
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("plain data serializes")
}

/// Writes each execution over the version it was read at, bumping it, inside the caller's
/// transaction. `NotFound` if one is gone, `Conflict` if one moved.
pub(crate) async fn update_executions(
    conn: &mut PgConnection,
    executions: &[Execution],
) -> Result<(), RepoError> {
    if executions.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = executions.iter().map(|x| x.id.as_uuid()).collect();
    let mut written = 0;
    for x in executions {
        written += sqlx::query(
            "UPDATE workflow_executions SET status = $2, steps = $3, reruns = $4,
                    completed_at = $5, updated_at = $6, version = version + 1
             WHERE id = $1 AND version = $7",
        )
        .bind(x.id.as_uuid())
        .bind(x.status.as_str())
        .bind(json_of(&x.steps))
        .bind(json_of(&x.reruns))
        .bind(x.completed_at)
        .bind(x.updated_at)
        .bind(x.version)
        .execute(&mut *conn)
        .await
        .map_err(repo_error)?
        .rows_affected();
    }
    check_written(conn, "workflow_executions", "execution", &ids, written).await
}

/// What moving executions adds to a write.
#[derive(Debug, Default)]
pub(crate) struct FollowUp {
    pub executions: Vec<Execution>,
    pub created: Vec<Task>,
    pub cancelled: Vec<Task>,
    pub events: Vec<NewEvent>,
}

/// Locks and moves the executions of the steps whose tasks `changes` end or send back to the
/// queue (but those it carries): called by every write of a change set, after its tasks are
/// written and before it commits. Tasks are locked before executions, as every write takes
/// them: first the queued tasks of those executions, which a failing execution cancels (a
/// pass holding one is waited for; if it assigned the task meanwhile, the task runs to its
/// end like those agents already hold), then the executions. An execution or workflow row
/// this version cannot read is left as it is, with an error logged, rather than failing the
/// write (the reports of other agents ride on it).
pub(crate) async fn follow(
    conn: &mut PgConnection,
    changes: &Changes,
) -> Result<FollowUp, RepoError> {
    let carried: HashSet<ExecutionId> = changes.executions.iter().map(|e| e.id).collect();
    let moved: Vec<_> = moved_steps(&changes.tasks)
        .into_iter()
        .filter(|(id, _)| !carried.contains(id))
        .collect();
    let mut out = FollowUp::default();
    if moved.is_empty() {
        return Ok(out);
    }
    let ids: Vec<Uuid> = moved.iter().map(|(id, _)| id.as_uuid()).collect();
    let written: HashSet<TaskId> = changes.tasks.iter().map(|t| t.id).collect();
    // Only an ended step can fail its execution and so cancel queued steps: a write that only
    // sends tasks back to the queue (a pass preempting one, say) locks no other task.
    let ends = moved
        .iter()
        .any(|(_, tasks)| tasks.iter().any(|t| t.status.is_terminal()));
    let mut queued: Vec<Task> = if ends {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE execution_id = ANY($1) AND status = 'pending'
             ORDER BY id FOR UPDATE"
        ))
        .bind(&ids)
        .read_all(&mut *conn, task_from_row)
        .await?
    } else {
        Vec::new()
    };
    queued.retain(|t| !written.contains(&t.id));
    let rows = sqlx::query(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE id = ANY($1)
         ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(repo_error)?;
    let executions: Vec<Execution> = rows
        .iter()
        .filter_map(|row| readable(execution_from_row(row)))
        .collect();
    let workflow_ids: Vec<Uuid> = executions.iter().map(|x| x.workflow_id.as_uuid()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ANY($1)"
    ))
    .bind(&workflow_ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(repo_error)?;
    let workflows: Vec<Workflow> = rows
        .iter()
        .filter_map(|row| readable(workflow_from_row(row)))
        .collect();
    for mut execution in executions {
        let Some(workflow) = workflows.iter().find(|w| w.id == execution.workflow_id) else {
            continue;
        };
        if !execution.matches(workflow) {
            tracing::error!(execution = %execution.id, "an execution's steps are not its workflow's; it is left as it is");
            continue;
        }
        let Some((_, tasks)) = moved.iter().find(|(id, _)| *id == execution.id) else {
            continue;
        };
        let Some(advance) = execution.follow(workflow, tasks) else {
            continue;
        };
        let now = execution.updated_at;
        let to_cancel: Vec<Task> = queued
            .iter()
            .filter(|t| advance.to_cancel.contains(&t.id))
            .cloned()
            .collect();
        let (cancelled, events) = execution.cancel_unstarted(to_cancel, now);
        out.events.extend(advance.events);
        out.events.extend(events);
        out.created.extend(advance.created);
        out.cancelled.extend(cancelled);
        out.cancelled.extend(advance.requeued);
        out.executions.push(execution);
    }
    Ok(out)
}

/// A row read back, or, logged, nothing.
fn readable<T>(read: Result<T, RepoError>) -> Option<T> {
    read.map_err(
        |e| tracing::error!(error = %e, "a workflow row cannot be read; it is left as it is"),
    )
    .ok()
}

#[async_trait]
impl WorkflowRepository for PgStore {
    async fn insert_workflow(
        &self,
        workflow: &Workflow,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let steps: Vec<StepInput> = workflow.steps.iter().map(|s| s.to_input()).collect();
        sqlx::query(&format!(
            "INSERT INTO workflows ({WORKFLOW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(workflow.id.as_uuid())
        .bind(&workflow.name)
        .bind(&workflow.description)
        .bind(json_of(&steps))
        .bind(Value::Object(workflow.metadata.as_map().clone()))
        .bind(workflow.created_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        commit_with(self, tx, events).await
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, RepoError> {
        sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .read_one(self.pool(), workflow_from_row)
        .await
    }

    async fn list_workflows(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepoError> {
        sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows
             WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.id))
        .bind(i64::from(limit))
        .read_all(self.pool(), workflow_from_row)
        .await
    }

    async fn delete_workflow(
        &self,
        id: WorkflowId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        // Locked first: an execution starting now waits for this delete (and then finds the
        // workflow gone), or this delete waits for it (and then sees it running).
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM workflows WHERE id = $1 FOR UPDATE")
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(repo_error)?;
        if found.is_none() {
            return Err(RepoError::NotFound);
        }
        // Its executions locked too, as they are now: a rerun committed a moment ago is seen
        // running, and none can start running again before the delete commits.
        let statuses: Vec<(String,)> = sqlx::query_as(
            "SELECT status FROM workflow_executions WHERE workflow_id = $1 ORDER BY id FOR UPDATE",
        )
        .bind(id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_error)?;
        if statuses
            .iter()
            .any(|(s,)| s == ExecutionStatus::Running.as_str())
        {
            return Err(RepoError::Conflict(format!(
                "workflow {id} has a running execution"
            )));
        }
        sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        commit_with(self, tx, events).await
    }

    async fn start_execution(
        &self,
        execution: &Execution,
        tasks: &[Task],
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM workflows WHERE id = $1 FOR SHARE")
                .bind(execution.workflow_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(repo_error)?;
        if found.is_none() {
            return Err(RepoError::NotFound);
        }
        sqlx::query(&format!(
            "INSERT INTO workflow_executions ({EXECUTION_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)"
        ))
        .bind(execution.id.as_uuid())
        .bind(execution.workflow_id.as_uuid())
        .bind(execution.status.as_str())
        .bind(Value::Object(execution.parameters.as_map().clone()))
        .bind(Value::Object(execution.metadata.as_map().clone()))
        .bind(json_of(&execution.steps))
        .bind(json_of(&execution.reruns))
        .bind(execution.created_at)
        .bind(execution.completed_at)
        .bind(execution.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        let tasks: Vec<&Task> = tasks.iter().collect();
        insert_tasks(&mut tx, &tasks).await?;
        commit_with(self, tx, events).await
    }

    async fn get_execution(&self, id: ExecutionId) -> Result<Execution, RepoError> {
        sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .read_one(self.pool(), execution_from_row)
        .await
    }

    async fn list_executions(
        &self,
        workflow: WorkflowId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Execution>, RepoError> {
        sqlx::query(&format!(
            "SELECT {LISTED_EXECUTION_COLUMNS} FROM workflow_executions
             WHERE workflow_id = $1
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(workflow.as_uuid())
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.id))
        .bind(i64::from(limit))
        .read_all(self.pool(), execution_from_row)
        .await
    }

    async fn workflow_counts(&self) -> Result<WorkflowCounts, RepoError> {
        let (workflows, running): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM workflows),
                    (SELECT count(*) FROM workflow_executions WHERE status = 'running')",
        )
        .fetch_one(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(WorkflowCounts {
            workflows: u64::try_from(workflows).unwrap_or(0),
            running_executions: u64::try_from(running).unwrap_or(0),
        })
    }
}
