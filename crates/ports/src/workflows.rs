//! The workflow repository port: definitions and their executions.
//!
//! An execution's progress moves in the writes of its tasks: every store write of a change set
//! (`TaskRepository::save`, `update_with_agents`, `schedule`) that ends the task of a step
//! hands the step's execution to `Execution::follow` in the same transaction, locked against
//! every other writer, and writes what it decides: the execution, the tasks of the steps that
//! became ready, the cancellation of queued steps when the execution fails, and their events.
//! A change set that carries an execution itself (an operator's cancel, a rerun) has decided
//! for that execution, and is written as it is.

use async_trait::async_trait;
use domain::{Cursor, Execution, ExecutionId, NewEvent, Task, Workflow, WorkflowId};

use crate::RepoError;

/// How many workflows exist, and how many of their executions run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkflowCounts {
    pub workflows: u64,
    pub running_executions: u64,
}

/// Where workflows and their executions live.
#[async_trait]
pub trait WorkflowRepository: Send + Sync {
    /// Stores a new definition and `events`, in one transaction. `Conflict` if one with this
    /// ID exists.
    async fn insert_workflow(
        &self,
        workflow: &Workflow,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// The definition with this ID. `NotFound` if there is none.
    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, RepoError>;

    /// Definitions, newest first (`created_at` then `id`, descending), strictly after `after`,
    /// at most `limit`.
    async fn list_workflows(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepoError>;

    /// Removes a definition and the records of its executions, and stores `events`, in one
    /// transaction. `NotFound` if there is none; `Conflict` if one of its executions is
    /// running, even one started at the same moment: then nothing changes.
    async fn delete_workflow(
        &self,
        id: WorkflowId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// Stores a new execution (`version` 0), the tasks of its first steps (`version` 0) and
    /// `events`, in one transaction. `NotFound` if its workflow is gone (then nothing is
    /// stored); `Conflict` if the execution's or a task's ID is taken.
    async fn start_execution(
        &self,
        execution: &Execution,
        tasks: &[Task],
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// The execution with this ID. `NotFound` if there is none.
    async fn get_execution(&self, id: ExecutionId) -> Result<Execution, RepoError>;

    /// The executions of one workflow, newest first (`created_at` then `id`, descending),
    /// strictly after `after`, at most `limit`; each step's `result` left out (`None`), as
    /// each may be up to 64 KiB.
    async fn list_executions(
        &self,
        workflow: WorkflowId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Execution>, RepoError>;

    /// How many definitions exist and how many executions run.
    async fn workflow_counts(&self) -> Result<WorkflowCounts, RepoError>;
}
