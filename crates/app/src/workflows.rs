//! Workflows: definitions, their executions, and an operator's cancel and rerun.
//!
//! Steps advance in the store, inside the writes that end their tasks (see the `workflows`
//! port); the use cases here start, cancel and rerun executions, each in one write.

use std::collections::HashMap;

use domain::workflow::{ExecutionError, ExecutionInput, WorkflowInput};
use domain::{Cursor, Execution, ExecutionId, Limit, Principal, TaskId, Workflow, WorkflowId};
use ports::{Changes, RepoError};

use crate::tasks::{record_transition, Transition};
use crate::{require, Access, AppError, Attempt, Platform};

fn workflow_error(e: RepoError) -> AppError {
    AppError::from_repo("Workflow", e)
}

fn execution_error(e: RepoError) -> AppError {
    AppError::from_repo("Execution", e)
}

fn refused(e: ExecutionError) -> AppError {
    match e {
        ExecutionError::InvalidTransition(m) => AppError::Conflict(m),
        ExecutionError::Invalid(errors) => AppError::Validation(errors),
    }
}

impl Platform {
    /// Stores a definition after checking it (see `Workflow::parse`).
    pub async fn create_workflow(
        &self,
        actor: &Principal,
        input: WorkflowInput,
    ) -> Result<Workflow, AppError> {
        require(actor, Access::Change, "workflows")?;
        let id = WorkflowId(self.deps.ids.new_id());
        let workflow = Workflow::parse(input, id, self.deps.clock.now())?;
        let event = domain::workflow::workflow_created(&workflow);
        let stored = self
            .deps
            .workflows
            .insert_workflow(&workflow, vec![event])
            .await
            .map_err(workflow_error)?;
        self.publish(&stored).await;
        Ok(workflow)
    }

    /// Definitions, newest first.
    pub async fn list_workflows(
        &self,
        actor: &Principal,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<crate::Page<Workflow>, AppError> {
        require(actor, Access::Read, "workflows")?;
        let rows = self
            .deps
            .workflows
            .list_workflows(after, limit.get() + 1)
            .await
            .map_err(workflow_error)?;
        Ok(crate::Page::of(rows, limit, |w| Cursor {
            created_at: w.created_at,
            id: w.id.as_uuid(),
        }))
    }

    pub async fn get_workflow(
        &self,
        actor: &Principal,
        id: WorkflowId,
    ) -> Result<Workflow, AppError> {
        require(actor, Access::Read, "workflows")?;
        self.deps
            .workflows
            .get_workflow(id)
            .await
            .map_err(workflow_error)
    }

    /// Deletes a definition and the records of its executions; `409` while one runs. The
    /// tasks its executions ran stay, as every task does.
    pub async fn delete_workflow(&self, actor: &Principal, id: WorkflowId) -> Result<(), AppError> {
        require(actor, Access::Change, "workflows")?;
        let workflow = self.get_workflow(actor, id).await?;
        let event = domain::workflow::workflow_deleted(&workflow, self.deps.clock.now());
        let stored = self
            .deps
            .workflows
            .delete_workflow(id, vec![event])
            .await
            .map_err(|e| match e {
                RepoError::Conflict(_) => AppError::Conflict(format!(
                    "workflow {id} has a running execution; cancel it first"
                )),
                other => workflow_error(other),
            })?;
        self.publish(&stored).await;
        Ok(())
    }

    /// Starts an execution: its first steps are queued as tasks in the same write.
    pub async fn execute_workflow(
        &self,
        actor: &Principal,
        id: WorkflowId,
        input: ExecutionInput,
    ) -> Result<Execution, AppError> {
        require(actor, Access::Change, "workflows")?;
        let workflow = self.get_workflow(actor, id).await?;
        let ids = &self.deps.ids;
        let (execution, advance) = Execution::start(
            &workflow,
            ExecutionId(ids.new_id()),
            input,
            || TaskId(ids.new_id()),
            self.deps.clock.now(),
        )?;
        let stored = self
            .deps
            .workflows
            .start_execution(&execution, &advance.created, advance.events)
            .await
            .map_err(workflow_error)?;
        self.publish(&stored).await;
        Ok(execution)
    }

    /// A workflow's executions, newest first.
    pub async fn list_executions(
        &self,
        actor: &Principal,
        workflow: WorkflowId,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<crate::Page<Execution>, AppError> {
        self.get_workflow(actor, workflow).await?;
        let rows = self
            .deps
            .workflows
            .list_executions(workflow, after, limit.get() + 1)
            .await
            .map_err(execution_error)?;
        Ok(crate::Page::of(rows, limit, |x| Cursor {
            created_at: x.created_at,
            id: x.id.as_uuid(),
        }))
    }

    /// One execution of a workflow; one of another workflow is not found.
    pub async fn get_execution(
        &self,
        actor: &Principal,
        workflow: WorkflowId,
        id: ExecutionId,
    ) -> Result<Execution, AppError> {
        require(actor, Access::Read, "workflows")?;
        let execution = self
            .deps
            .workflows
            .get_execution(id)
            .await
            .map_err(execution_error)?;
        if execution.workflow_id != workflow {
            return Err(AppError::NotFound("Execution"));
        }
        Ok(execution)
    }

    /// Cancels a running execution: its pending steps at once, the queued tasks of its running
    /// steps at once, and the held ones through their agents' next heartbeat (each step ends
    /// `cancelled` when its agent stops). `409` unless it is running.
    pub async fn cancel_execution(
        &self,
        actor: &Principal,
        workflow: WorkflowId,
        id: ExecutionId,
    ) -> Result<Execution, AppError> {
        require(actor, Access::Change, "workflows")?;
        crate::until_won("execution", || async {
            let mut execution = self.get_execution(actor, workflow, id).await?;
            let now = self.deps.clock.now();
            let (running, event) = execution.cancel(now).map_err(refused)?;
            let mut changes = Changes::default();
            changes.events.push(event);
            let tasks = self
                .deps
                .tasks
                .get_many(&running)
                .await
                .map_err(|e| AppError::from_repo("Task", e))?;
            for mut task in tasks {
                let before = task.clone();
                let Ok(outcome) = task.cancel(now) else {
                    continue; // its cancellation was asked for already
                };
                let transition = Transition {
                    before: &before,
                    task: &task,
                    outcome,
                    note: None,
                    now,
                };
                record_transition(transition, None, &HashMap::new(), &mut changes);
                if let Some(ended) = execution.step_cancelled(&task) {
                    changes.events.push(ended);
                }
                changes.tasks.push(task);
            }
            changes.executions.push(execution.clone());
            let written = self.deps.tasks.save(changes).await;
            let Attempt::Won(stored) = Attempt::of(written).map_err(execution_error)? else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            execution.version += 1;
            Ok(Attempt::Won(execution))
        })
        .await
    }

    /// Runs a failed or cancelled execution again from `from_step` (see `Execution::rerun`).
    /// `422` when the workflow has no such step, `409` unless the execution failed or was
    /// cancelled.
    pub async fn rerun_execution(
        &self,
        actor: &Principal,
        workflow: WorkflowId,
        id: ExecutionId,
        from_step: &str,
    ) -> Result<Execution, AppError> {
        require(actor, Access::Change, "workflows")?;
        let definition = self.get_workflow(actor, workflow).await?;
        crate::until_won("execution", || async {
            let mut execution = self.get_execution(actor, workflow, id).await?;
            if !execution.matches(&definition) {
                return Err(AppError::Internal(format!(
                    "execution {id} does not have the steps of workflow {workflow}"
                )));
            }
            let ids = &self.deps.ids;
            let advance = execution
                .rerun(
                    &definition,
                    from_step,
                    || TaskId(ids.new_id()),
                    self.deps.clock.now(),
                )
                .map_err(refused)?;
            let changes = Changes {
                executions: vec![execution.clone()],
                created: advance.created,
                events: advance.events,
                ..Changes::default()
            };
            let written = self.deps.tasks.save(changes).await;
            let Attempt::Won(stored) = Attempt::of(written).map_err(execution_error)? else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            execution.version += 1;
            Ok(Attempt::Won(execution))
        })
        .await
    }
}
