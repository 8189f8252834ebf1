//! Workflows and their executions in memory, and how a write moves the executions of the steps
//! it ends.

use std::collections::HashSet;

use async_trait::async_trait;
use domain::workflow::moved_steps;
use domain::{
    Cursor, Execution, ExecutionId, ExecutionStatus, NewEvent, Task, Workflow, WorkflowId,
};
use ports::{Changes, RepoError, WorkflowCounts, WorkflowRepository};

use super::{newest_page, unchanged, MemoryStore, State};

/// What moving executions adds to a write.
#[derive(Debug, Default)]
pub(super) struct FollowUp {
    pub executions: Vec<Execution>,
    pub created: Vec<Task>,
    pub cancelled: Vec<Task>,
    pub events: Vec<NewEvent>,
}

impl State {
    /// The executions of the steps whose tasks `changes` end or send back to the queue (but
    /// those it carries), as they move.
    pub(super) fn follow(&self, changes: &Changes) -> FollowUp {
        let carried: HashSet<ExecutionId> = changes.executions.iter().map(|e| e.id).collect();
        let written: HashSet<domain::TaskId> = changes.tasks.iter().map(|t| t.id).collect();
        let mut out = FollowUp::default();
        for (id, moved) in moved_steps(&changes.tasks) {
            if carried.contains(&id) {
                continue;
            }
            let Some(mut execution) = self.executions.get(&id).cloned() else {
                continue;
            };
            let Some(workflow) = self.workflows.get(&execution.workflow_id) else {
                continue;
            };
            if !execution.matches(workflow) {
                continue;
            }
            let Some(advance) = execution.follow(workflow, &moved) else {
                continue;
            };
            let now = execution.updated_at;
            let queued: Vec<Task> = advance
                .to_cancel
                .iter()
                .filter(|t| !written.contains(t))
                .filter_map(|t| self.tasks.get(t).cloned())
                .collect();
            let (cancelled, events) = execution.cancel_unstarted(queued, now);
            out.events.extend(advance.events);
            out.events.extend(events);
            out.created.extend(advance.created);
            out.cancelled.extend(cancelled);
            out.cancelled.extend(advance.requeued);
            out.executions.push(execution);
        }
        out
    }

    /// Whether the execution exists and runs.
    pub(super) fn running(&self, id: ExecutionId) -> bool {
        self.executions
            .get(&id)
            .is_some_and(|x| x.status == ExecutionStatus::Running)
    }

    pub(super) fn check_execution(&self, execution: &Execution) -> Result<(), RepoError> {
        let stored = self.executions.get(&execution.id).map(|e| e.version);
        unchanged("execution", execution.id, execution.version, stored)
    }
}

#[async_trait]
impl WorkflowRepository for MemoryStore {
    async fn insert_workflow(
        &self,
        workflow: &Workflow,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if state.workflows.contains_key(&workflow.id) {
            return Err(RepoError::Conflict(format!(
                "workflow {} exists",
                workflow.id
            )));
        }
        state.workflows.insert(workflow.id, workflow.clone());
        Ok(state.append(events))
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow, RepoError> {
        self.lock()
            .workflows
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn list_workflows(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Workflow>, RepoError> {
        let state = self.lock();
        Ok(newest_page(
            state.workflows.values(),
            |w| (w.created_at, w.id.as_uuid()),
            after,
            limit,
        ))
    }

    async fn delete_workflow(
        &self,
        id: WorkflowId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&id) {
            return Err(RepoError::NotFound);
        }
        let running = state
            .executions
            .values()
            .any(|e| e.workflow_id == id && e.status == ExecutionStatus::Running);
        if running {
            return Err(RepoError::Conflict(format!(
                "workflow {id} has a running execution"
            )));
        }
        state.workflows.remove(&id);
        state.executions.retain(|_, e| e.workflow_id != id);
        Ok(state.append(events))
    }

    async fn start_execution(
        &self,
        execution: &Execution,
        tasks: &[Task],
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&execution.workflow_id) {
            return Err(RepoError::NotFound);
        }
        if state.executions.contains_key(&execution.id) {
            return Err(RepoError::Conflict(format!(
                "execution {} exists",
                execution.id
            )));
        }
        state.check_new_tasks(tasks)?;
        let mut stored = execution.clone();
        stored.version = 0;
        state.executions.insert(stored.id, stored);
        for task in tasks {
            let mut stored = task.clone();
            stored.version = 0;
            state.put_task(stored);
        }
        Ok(state.append(events))
    }

    async fn get_execution(&self, id: ExecutionId) -> Result<Execution, RepoError> {
        self.lock()
            .executions
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn list_executions(
        &self,
        workflow: WorkflowId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Execution>, RepoError> {
        let state = self.lock();
        let mut page = newest_page(
            state
                .executions
                .values()
                .filter(|e| e.workflow_id == workflow),
            |e| (e.created_at, e.id.as_uuid()),
            after,
            limit,
        );
        for step in page.iter_mut().flat_map(|e| &mut e.steps) {
            step.result = None;
        }
        Ok(page)
    }

    async fn workflow_counts(&self) -> Result<WorkflowCounts, RepoError> {
        let state = self.lock();
        Ok(WorkflowCounts {
            workflows: state.workflows.len() as u64,
            running_executions: state
                .executions
                .values()
                .filter(|e| e.status == ExecutionStatus::Running)
                .count() as u64,
        })
    }
}
