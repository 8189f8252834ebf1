//! Workflows: a definition is a DAG of steps; an execution runs it once, turning each step into
//! a task when every step it depends on has ended.
//!
//! An execution's progress is a value like any other entity's: the store keeps it and every
//! change to it is decided here. When a write ends the task of a step, the store hands the
//! execution to [`Execution::follow`] in the same transaction, so a step's end and the tasks it
//! unblocks commit together, whichever write ended it (an agent's report, a lost lease, an
//! operator's cancel).

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::event::{task_submitted, task_transition};
use crate::ids::{ExecutionId, TaskId, WorkflowId};
use crate::metadata::MAX_METADATA_BYTES;
use crate::task::{NewTask, Outcome, TaskInput, TaskStatus};
use crate::validation::{check_name, FieldError};
use crate::{EventKind, Metadata, NewEvent, Task, ValidationErrors};

/// Most steps one workflow may have.
pub const MAX_STEPS: usize = 200;
/// Longest description of a workflow.
pub const MAX_DESCRIPTION_CHARS: usize = crate::task::MAX_DESCRIPTION_CHARS;
/// Most problems with dependencies one refusal lists.
const MAX_GRAPH_ERRORS: usize = 50;
/// Most reruns one execution records; older ones are dropped from its record.
pub const MAX_RERUNS_KEPT: usize = 100;

named_enum!(
    /// What a step does. Every step runs as a task today.
    StepKind, "step type" {
            Task => "task",
    }
);

named_enum!(
    /// Where an execution is. It starts `running`: its first steps are queued as tasks in the
    /// same write that stores it.
    ExecutionStatus, "execution status" {
            Running => "running",
            Completed => "completed",
            Failed => "failed",
            Cancelled => "cancelled",
    }
);

named_enum!(
    /// Where one step of an execution is: `pending` until every step it depends on has ended,
    /// `running` while its task is queued or worked on, then how its task ended.
    StepStatus, "step status" {
            Pending => "pending",
            Running => "running",
            Completed => "completed",
            Failed => "failed",
            Cancelled => "cancelled",
    }
);

/// A resource claim as a step gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimInput {
    pub resource_id: String,
    pub amount: Map<String, Value>,
}

/// The raw fields of a step, as they arrive, and as a store keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub resources: Map<String, Value>,
    #[serde(default)]
    pub resource_claims: Vec<ClaimInput>,
    #[serde(default)]
    pub max_attempts: Option<i64>,
    #[serde(default)]
    pub lease_seconds: Option<i64>,
    #[serde(default)]
    pub continue_on_failure: Option<bool>,
}

/// The raw fields of a definition.
#[derive(Debug, Clone, Default)]
pub struct WorkflowInput {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<StepInput>,
    pub metadata: Map<String, Value>,
}

/// One validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub parameters: Metadata,
    /// The steps it depends on, as given.
    pub depends_on: Vec<String>,
    pub continue_on_failure: bool,
    /// What its task is made of (title, options); the metadata is filled in per execution.
    pub task: NewTask,
    /// As given, to keep and echo: the resource maps as the client wrote them.
    input: StepInput,
}

impl Step {
    /// The step as a store keeps it (and reads it back through [`Workflow::parse`]).
    pub fn to_input(&self) -> StepInput {
        self.input.clone()
    }
}

/// A workflow definition: named steps and what each depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub id: WorkflowId,
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    /// For each step, the indexes of the steps it waits for: those it names, or, when no step
    /// names any, the one before it.
    needs: Vec<Vec<usize>>,
}

impl Workflow {
    /// Checks a definition and reports every problem at once: at least one step, at most
    /// [`MAX_STEPS`], unique names, known types, dependencies that name other existing steps,
    /// no cycle (named step by step), and each step's task options as a task's would be.
    pub fn parse(
        input: WorkflowInput,
        id: WorkflowId,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.collect("name", check_name(&input.name));
        let description = input.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.push(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
        let metadata = errors.collect("metadata", Metadata::parse(input.metadata));
        if input.steps.is_empty() {
            errors.push("steps", "must have at least one step");
        }
        if input.steps.len() > MAX_STEPS {
            errors.push("steps", format!("must have at most {MAX_STEPS} steps"));
        }
        // The graph is checked from the names as given, whatever else is wrong with a step,
        // so every problem is reported at once.
        let names: Vec<String> = input
            .steps
            .iter()
            .take(MAX_STEPS)
            .map(|s| s.name.trim().to_owned())
            .collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            if index.insert(name.as_str(), i).is_some() && !name.is_empty() {
                errors.push(
                    format!("steps[{i}].name"),
                    format!("step '{}' is named twice", shown(name)),
                );
            }
        }
        let chained = input.steps.iter().all(|s| s.depends_on.is_empty());
        let mut needs = vec![Vec::new(); names.len()];
        let graph_errors = errors.0.len();
        // Past the most steps there may be, the count alone is the problem.
        let graph = if input.steps.len() > MAX_STEPS {
            &[][..]
        } else {
            &input.steps[..]
        };
        for (i, raw) in graph.iter().enumerate() {
            if raw.depends_on.len() > MAX_STEPS {
                continue; // refused as too long below
            }
            if errors.0.len() - graph_errors >= MAX_GRAPH_ERRORS {
                break;
            }
            if chained {
                needs[i] = i.checked_sub(1).into_iter().collect();
                continue;
            }
            let mut seen = HashSet::new();
            for dep in raw.depends_on.iter().map(|d| d.trim()) {
                if errors.0.len() - graph_errors >= MAX_GRAPH_ERRORS {
                    break;
                }
                let field = format!("steps[{i}].depends_on");
                match index.get(dep) {
                    _ if !seen.insert(dep) => {
                        errors.push(field, format!("names step '{}' twice", shown(dep)))
                    }
                    Some(&j) if j == i => errors.push(
                        field,
                        format!("step '{}' cannot depend on itself", shown(dep)),
                    ),
                    Some(&j) => needs[i].push(j),
                    None => errors.push(
                        field,
                        format!("names no step of this workflow: '{}'", shown(dep)),
                    ),
                }
            }
        }
        if errors.0.len() == graph_errors && !graph.is_empty() {
            if let Some(cycle) = find_cycle(&needs) {
                let on: Vec<&str> = cycle.iter().map(|&i| shown(&names[i])).collect();
                errors.push(
                    format!("steps[{}].depends_on", cycle[0]),
                    format!("steps form a cycle: {} -> {}", on.join(" -> "), on[0]),
                );
            }
        }
        let steps: Vec<Step> = input
            .steps
            .into_iter()
            .take(MAX_STEPS)
            .enumerate()
            .filter_map(|(i, raw)| parse_step(raw, i, now, &mut errors))
            .collect();
        match (name, metadata) {
            (Some(name), Some(metadata)) if errors.is_empty() => {
                let workflow = Self {
                    id,
                    name,
                    description,
                    steps,
                    metadata,
                    created_at: now,
                    needs,
                };
                let mut errors = ValidationErrors::default();
                for i in 0..workflow.steps.len() {
                    let needed = workflow.least_handed(i, &Map::new());
                    if needed > MAX_METADATA_BYTES {
                        errors.push(
                            format!("steps[{i}].parameters"),
                            format!(
                                "leave no room for what the step's dependencies return: its \
                                 task's metadata would take {needed} bytes; at most \
                                 {MAX_METADATA_BYTES} fit"
                            ),
                        );
                    }
                }
                errors.into_result().map(|()| workflow)
            }
            _ => Err(errors),
        }
    }

    /// The size of step `i`'s task metadata with these execution parameters when everything
    /// its dependencies return is left out: what must fit for the step to run.
    pub fn least_handed(&self, i: usize, parameters: &Map<String, Value>) -> usize {
        let upstream: Map<String, Value> = self
            .needs(i)
            .iter()
            .map(|&j| {
                let outcome = json!({
                    "status": StepStatus::Cancelled.as_str(),
                    "task_id": TaskId(uuid::Uuid::nil()),
                    "result_omitted": true,
                });
                (self.steps[j].name.clone(), outcome)
            })
            .collect();
        size_of(&handed(parameters, &self.steps[i], upstream))
    }

    /// The index of the step named `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The steps step `i` waits for.
    pub fn needs(&self, i: usize) -> &[usize] {
        &self.needs[i]
    }

    /// Step `i` and every step downstream of it.
    fn downstream_of(&self, i: usize) -> HashSet<usize> {
        let mut found = HashSet::from([i]);
        let mut queue = VecDeque::from([i]);
        while let Some(j) = queue.pop_front() {
            for (k, needs) in self.needs.iter().enumerate() {
                if needs.contains(&j) && found.insert(k) {
                    queue.push_back(k);
                }
            }
        }
        found
    }
}

fn parse_step(
    raw: StepInput,
    i: usize,
    now: DateTime<Utc>,
    errors: &mut ValidationErrors,
) -> Option<Step> {
    let prefix = |field: &str| format!("steps[{i}].{field}");
    let before = errors.0.len();
    let kind = match raw.kind.as_deref().unwrap_or("task").parse::<StepKind>() {
        Ok(k) => Some(k),
        Err(m) => {
            errors.push(prefix("type"), m);
            None
        }
    };
    let parameters = match Metadata::parse(raw.parameters.clone()) {
        Ok(p) => Some(p),
        Err(m) => {
            errors.push(prefix("parameters"), m);
            None
        }
    };
    if raw.depends_on.len() > MAX_STEPS {
        errors.push(
            prefix("depends_on"),
            format!("must have at most {MAX_STEPS} entries"),
        );
    }
    let task = NewTask::parse(
        TaskInput {
            title: raw.name.clone(),
            description: None,
            priority: raw.priority,
            required_capabilities: raw.required_capabilities.clone(),
            resources: raw.resources.clone(),
            deadline: None,
            metadata: Map::new(),
            max_attempts: raw.max_attempts,
            lease_seconds: raw.lease_seconds,
            resource_claims: raw
                .resource_claims
                .iter()
                .map(|c| (c.resource_id.clone(), c.amount.clone()))
                .collect(),
            preemptible: None,
        },
        now,
    );
    let task = match task {
        Ok(t) => Some(t),
        Err(more) => {
            for e in more.0 {
                let field = match e.field.as_str() {
                    "title" => "name".to_owned(),
                    other => other.to_owned(),
                };
                errors.0.push(FieldError::new(prefix(&field), e.message));
            }
            None
        }
    };
    let (Some(kind), Some(parameters), Some(task)) = (kind, parameters, task) else {
        return None;
    };
    if errors.0.len() > before {
        return None;
    }
    let mut input = raw;
    input.name = task.title.clone();
    input.kind = Some(kind.as_str().to_owned());
    input.depends_on = input
        .depends_on
        .iter()
        .map(|d| d.trim().to_owned())
        .collect();
    Some(Step {
        name: task.title.clone(),
        kind,
        parameters,
        depends_on: input.depends_on.clone(),
        continue_on_failure: input.continue_on_failure.unwrap_or(false),
        task,
        input,
    })
}

/// A name as an error message quotes it: cut short past the longest a name may be.
fn shown(name: &str) -> &str {
    match name.char_indices().nth(crate::validation::MAX_NAME_CHARS) {
        Some((cut, _)) => &name[..cut],
        None => name,
    }
}

/// A cycle among the steps, as the indexes along it, if there is one.
fn find_cycle(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(i: usize, needs: &[Vec<usize>], marks: &mut [Mark], path: &mut Vec<usize>) -> bool {
        marks[i] = Mark::Open;
        path.push(i);
        for &j in &needs[i] {
            let mark = marks[j];
            match mark {
                Mark::Open => {
                    let from = path.iter().position(|&k| k == j).unwrap_or(0);
                    path.drain(..from);
                    // The path runs from a step to what it depends on: reversed, it is the
                    // order in which the steps would run.
                    path.reverse();
                    return true;
                }
                Mark::New if visit(j, needs, marks, path) => return true,
                _ => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        false
    }
    let mut marks = vec![Mark::New; needs.len()];
    for i in 0..needs.len() {
        let mut path = Vec::new();
        if marks[i] == Mark::New && visit(i, needs, &mut marks, &mut path) {
            // Named from the step listed first on it.
            let first = (0..path.len()).min_by_key(|&k| path[k]).unwrap_or(0);
            path.rotate_left(first);
            return Some(path);
        }
    }
    None
}

/// One step of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRun {
    pub name: String,
    pub status: StepStatus,
    /// The task this step runs as: chosen when the step is (re)set, created when it is ready.
    pub task_id: TaskId,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl StepRun {
    fn fresh(name: &str, task_id: TaskId) -> Self {
        Self {
            name: name.to_owned(),
            status: StepStatus::Pending,
            task_id,
            result: None,
            error: None,
            started_at: None,
            completed_at: None,
        }
    }

    /// Whether the steps that depend on this one may run: it completed, or it failed and may.
    fn lets_dependents_run(&self, step: &Step) -> bool {
        match self.status {
            StepStatus::Completed => true,
            StepStatus::Failed | StepStatus::Cancelled => step.continue_on_failure,
            StepStatus::Pending | StepStatus::Running => false,
        }
    }

    fn ended(&self) -> bool {
        !matches!(self.status, StepStatus::Pending | StepStatus::Running)
    }
}

/// A rerun, as an execution records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    pub from_step: String,
    /// The steps it set to run afresh.
    pub steps: Vec<String>,
    pub at: DateTime<Utc>,
}

/// The raw fields of an execution request.
#[derive(Debug, Clone, Default)]
pub struct ExecutionInput {
    pub parameters: Map<String, Value>,
    pub metadata: Map<String, Value>,
}

/// Why a change to an execution was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecutionError {
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    Invalid(ValidationErrors),
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub id: ExecutionId,
    pub workflow_id: WorkflowId,
    pub status: ExecutionStatus,
    pub parameters: Metadata,
    pub metadata: Metadata,
    /// One per step of the workflow, in its order.
    pub steps: Vec<StepRun>,
    pub reruns: Vec<Rerun>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// What a change to an execution adds to the write that makes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advance {
    /// Tasks of steps that became ready, to insert.
    pub created: Vec<Task>,
    /// Tasks of steps that have not started and must not: to cancel (see
    /// [`Execution::cancel_unstarted`]) if they are still pending when locked.
    pub to_cancel: Vec<TaskId>,
    /// Tasks the same write sent back to the queue, cancelled instead: to write over the
    /// version that write stores.
    pub requeued: Vec<Task>,
    pub events: Vec<NewEvent>,
}

impl Advance {
    fn absorb(&mut self, other: Advance) {
        self.created.extend(other.created);
        self.to_cancel.extend(other.to_cancel);
        self.requeued.extend(other.requeued);
        self.events.extend(other.events);
    }
}

impl Execution {
    /// Starts `workflow` with the given parameters: the execution, and the tasks of its first
    /// steps with their events. `task_ids` gives each step the ID its task will have.
    pub fn start(
        workflow: &Workflow,
        id: ExecutionId,
        input: ExecutionInput,
        mut task_ids: impl FnMut() -> TaskId,
        now: DateTime<Utc>,
    ) -> Result<(Self, Advance), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let parameters = errors.collect("parameters", Metadata::parse(input.parameters));
        let metadata = errors.collect("metadata", Metadata::parse(input.metadata));
        let (Some(parameters), Some(metadata)) = (parameters, metadata) else {
            return Err(errors);
        };
        // Every step's task carries the parameters whole, beside its own and what its
        // dependencies did: they must leave that room.
        for (i, step) in workflow.steps.iter().enumerate() {
            let needed = workflow.least_handed(i, parameters.as_map());
            if needed > MAX_METADATA_BYTES {
                errors.push(
                    "parameters",
                    format!(
                        "with the parameters of step '{}' and room for what its dependencies \
                         return, its task's metadata would take {needed} bytes; at most \
                         {MAX_METADATA_BYTES} fit",
                        step.name
                    ),
                );
                return Err(errors);
            }
        }
        let mut execution = Self {
            id,
            workflow_id: workflow.id,
            status: ExecutionStatus::Running,
            parameters,
            metadata,
            steps: workflow
                .steps
                .iter()
                .map(|s| StepRun::fresh(&s.name, task_ids()))
                .collect(),
            reruns: Vec::new(),
            created_at: now,
            completed_at: None,
            updated_at: now,
            version: 0,
        };
        let mut advance = Advance {
            events: vec![execution.event(EventKind::ExecutionStarted, json!({}), now)],
            ..Advance::default()
        };
        advance.absorb(execution.launch_ready(workflow, now));
        Ok((execution, advance))
    }

    /// Whether this execution's steps are those of `workflow` (a store checks this of rows it
    /// reads, which another version may have written).
    pub fn matches(&self, workflow: &Workflow) -> bool {
        self.workflow_id == workflow.id
            && self.steps.len() == workflow.steps.len()
            && self
                .steps
                .iter()
                .zip(&workflow.steps)
                .all(|(run, step)| run.name == step.name)
    }

    /// The step tasks a write has moved (see [`moved_steps`]): records how each step whose
    /// current task ended ended, then, while the execution runs, either fails it (a step failed
    /// that may not: its pending steps are cancelled, and its queued tasks listed in
    /// `to_cancel`) or queues the steps that became ready, completing it when every step has
    /// ended. A step's task that went back to the queue (a lost lease, say) while the execution
    /// no longer runs is cancelled rather than run again: it is returned in
    /// [`Advance::requeued`], over the version the same write stores. Tasks that are not a
    /// step's current task (an earlier run's, or one whose end was recorded already) change
    /// nothing: `None` when none of `moved` moved the execution.
    pub fn follow(&mut self, workflow: &Workflow, moved: &[&Task]) -> Option<Advance> {
        let mut advance = Advance::default();
        let mut failed = None;
        let mut ended_any = false;
        for task in moved.iter().filter(|t| t.status.is_terminal()) {
            let Some(i) = self.running_step_of(task) else {
                continue;
            };
            ended_any = true;
            self.updated_at = self.updated_at.max(task.updated_at);
            advance.events.push(self.record_end(i, task));
            let run = &self.steps[i];
            if failed.is_none() && !run.lets_dependents_run(&workflow.steps[i]) {
                failed = Some(format!("step '{}' {}", run.name, run.status));
            }
        }
        let now = self.updated_at;
        if ended_any && self.status == ExecutionStatus::Running {
            match failed {
                Some(reason) => advance.absorb(self.fail(&reason, now)),
                None => advance.absorb(self.launch_ready(workflow, now)),
            }
        }
        let mut requeued_any = false;
        if self.status != ExecutionStatus::Running {
            for task in moved.iter().filter(|t| t.status == TaskStatus::Pending) {
                if self.running_step_of(task).is_none() {
                    continue;
                }
                let mut task = (*task).clone();
                let at = task.updated_at;
                if task.cancel(at).is_err() {
                    continue;
                }
                task.error = Some(format!("cancelled: its execution {}", self.status));
                self.updated_at = self.updated_at.max(at);
                // Over the version this write stores for it.
                task.version += 1;
                requeued_any = true;
                advance
                    .events
                    .push(task_transition(&task, Outcome::Cancelled, None, at));
                if let Some(i) = self.running_step_of(&task) {
                    advance.events.push(self.record_end(i, &task));
                }
                advance.to_cancel.retain(|id| *id != task.id);
                advance.requeued.push(task);
            }
        }
        (ended_any || requeued_any).then_some(advance)
    }

    /// The running step whose current task is `task`.
    fn running_step_of(&self, task: &Task) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.task_id == task.id && s.status == StepStatus::Running)
    }

    /// Cancels those of `tasks` (this execution's, as listed in an [`Advance::to_cancel`] and
    /// locked) that are still pending, and records their steps as cancelled; returns them and
    /// their events.
    pub fn cancel_unstarted(
        &mut self,
        tasks: Vec<Task>,
        now: DateTime<Utc>,
    ) -> (Vec<Task>, Vec<NewEvent>) {
        let mut cancelled = Vec::new();
        let mut events = Vec::new();
        for mut task in tasks {
            if task.status != TaskStatus::Pending || task.execution_id != Some(self.id.as_uuid()) {
                continue;
            }
            if task.cancel(now).is_err() {
                continue;
            }
            events.push(task_transition(&task, Outcome::Cancelled, None, now));
            if let Some(i) = self.steps.iter().position(|s| s.task_id == task.id) {
                events.push(self.record_end(i, &task));
            }
            cancelled.push(task);
        }
        (cancelled, events)
    }

    /// An operator cancels the execution: its pending steps are cancelled, and the tasks of
    /// its running steps are listed for the caller to cancel (a queued one at once, a held one
    /// when its agent stops). `InvalidTransition` unless it is running.
    pub fn cancel(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<TaskId>, NewEvent), ExecutionError> {
        if self.status != ExecutionStatus::Running {
            return Err(ExecutionError::InvalidTransition(format!(
                "a {} execution cannot be cancelled",
                self.status
            )));
        }
        self.status = ExecutionStatus::Cancelled;
        self.completed_at = Some(now);
        self.updated_at = now;
        let mut running = Vec::new();
        for run in &mut self.steps {
            match run.status {
                StepStatus::Pending => {
                    run.status = StepStatus::Cancelled;
                    run.completed_at = Some(now);
                }
                StepStatus::Running => running.push(run.task_id),
                _ => {}
            }
        }
        let event = self.event(EventKind::ExecutionCancelled, json!({}), now);
        Ok((running, event))
    }

    /// Records that a step's task was cancelled by the caller of [`Self::cancel`], which
    /// writes the execution itself: the event of the step's end, if it was running and its
    /// task has ended.
    pub fn step_cancelled(&mut self, task: &Task) -> Option<NewEvent> {
        if !task.status.is_terminal() {
            return None; // asked to stop: it ends when its agent does
        }
        let i = self
            .steps
            .iter()
            .position(|s| s.task_id == task.id && s.status == StepStatus::Running)?;
        Some(self.record_end(i, task))
    }

    /// Runs a failed or cancelled execution again from `from_step`: that step, every step that
    /// did not complete (pending, failed or cancelled), and every step downstream of one of
    /// those run afresh, each with a new task ID from `task_ids`; the other completed steps
    /// keep their results. The steps whose dependencies have all ended are queued at once.
    /// `InvalidTransition` unless the execution failed or was cancelled, or while a step's
    /// task has not ended (an agent still holds it): a step never runs twice at once.
    pub fn rerun(
        &mut self,
        workflow: &Workflow,
        from_step: &str,
        mut task_ids: impl FnMut() -> TaskId,
        now: DateTime<Utc>,
    ) -> Result<Advance, ExecutionError> {
        let from_step = from_step.trim();
        let Some(from) = workflow.step_index(from_step) else {
            let named = if from_step.chars().count() > crate::validation::MAX_NAME_CHARS {
                "names no step of this workflow".to_owned()
            } else {
                format!("names no step of this workflow: '{from_step}'")
            };
            return Err(ExecutionError::Invalid(ValidationErrors::single(
                "from_step",
                named,
            )));
        };
        if !matches!(
            self.status,
            ExecutionStatus::Failed | ExecutionStatus::Cancelled
        ) {
            return Err(ExecutionError::InvalidTransition(format!(
                "a {} execution cannot be rerun; only a failed or cancelled one can",
                self.status
            )));
        }
        if let Some(run) = self.steps.iter().find(|s| s.status == StepStatus::Running) {
            return Err(ExecutionError::InvalidTransition(format!(
                "step '{}' still has a task running ({}); rerun once it has ended",
                run.name, run.task_id
            )));
        }
        let mut again: HashSet<usize> = HashSet::new();
        for (i, run) in self.steps.iter().enumerate() {
            if i == from || run.status != StepStatus::Completed {
                again.extend(workflow.downstream_of(i));
            }
        }
        let mut reset = Vec::new();
        for (i, run) in self.steps.iter_mut().enumerate() {
            if again.contains(&i) {
                *run = StepRun::fresh(&run.name, task_ids());
                reset.push(run.name.clone());
            }
        }
        self.status = ExecutionStatus::Running;
        self.completed_at = None;
        self.updated_at = now;
        self.reruns.push(Rerun {
            from_step: workflow.steps[from].name.clone(),
            steps: reset.clone(),
            at: now,
        });
        if self.reruns.len() > MAX_RERUNS_KEPT {
            self.reruns.remove(0);
        }
        let mut advance = Advance {
            events: vec![self.event(
                EventKind::ExecutionRerun,
                json!({"from_step": workflow.steps[from].name, "steps": reset}),
                now,
            )],
            ..Advance::default()
        };
        advance.absorb(self.launch_ready(workflow, now));
        Ok(advance)
    }

    /// Records how step `i`'s task ended; returns the step's event.
    fn record_end(&mut self, i: usize, task: &Task) -> NewEvent {
        let now = task.updated_at;
        let run = &mut self.steps[i];
        run.status = match task.status {
            TaskStatus::Completed => StepStatus::Completed,
            TaskStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Failed,
        };
        run.completed_at = Some(now);
        run.result = task.result.clone();
        run.error = match task.status {
            TaskStatus::Completed => None,
            TaskStatus::Expired => Some("the task's deadline passed".into()),
            TaskStatus::Cancelled => task.error.clone().or(Some("cancelled".into())),
            _ => task.error.clone(),
        };
        let (kind, data) = match run.status {
            StepStatus::Completed => (EventKind::StepCompleted, json!({"result": run.result})),
            _ => (EventKind::StepFailed, json!({"error": run.error})),
        };
        let mut event = self.step_event(kind, i, data, now);
        event.task_id = Some(task.id);
        event
    }

    /// Fails the execution: pending steps are cancelled, and the tasks of running steps that no
    /// agent holds yet are listed to cancel.
    fn fail(&mut self, reason: &str, now: DateTime<Utc>) -> Advance {
        self.status = ExecutionStatus::Failed;
        self.completed_at = Some(now);
        self.updated_at = now;
        let mut to_cancel = Vec::new();
        for run in &mut self.steps {
            match run.status {
                StepStatus::Pending => {
                    run.status = StepStatus::Cancelled;
                    run.completed_at = Some(now);
                }
                StepStatus::Running => to_cancel.push(run.task_id),
                _ => {}
            }
        }
        Advance {
            to_cancel,
            events: vec![self.event(EventKind::ExecutionFailed, json!({"reason": reason}), now)],
            ..Advance::default()
        }
    }

    /// Queues every pending step whose dependencies let it run; completes the execution when
    /// every step has ended.
    fn launch_ready(&mut self, workflow: &Workflow, now: DateTime<Utc>) -> Advance {
        let mut advance = Advance::default();
        let ready: Vec<usize> = (0..self.steps.len())
            .filter(|&i| {
                self.steps[i].status == StepStatus::Pending
                    && workflow
                        .needs(i)
                        .iter()
                        .all(|&j| self.steps[j].lets_dependents_run(&workflow.steps[j]))
            })
            .collect();
        for i in ready {
            let task = self.task_of(workflow, i, now);
            let run = &mut self.steps[i];
            run.status = StepStatus::Running;
            run.started_at = Some(now);
            advance.events.push(task_submitted(&task));
            let mut event = self.step_event(EventKind::StepStarted, i, json!({}), now);
            event.task_id = Some(task.id);
            advance.events.push(event);
            advance.created.push(task);
        }
        if self.steps.iter().all(StepRun::ended) {
            self.status = ExecutionStatus::Completed;
            self.completed_at = Some(now);
            advance
                .events
                .push(self.event(EventKind::ExecutionCompleted, json!({}), now));
        }
        self.updated_at = self.updated_at.max(now);
        advance
    }

    /// The task step `i` runs as: its options, and metadata holding the execution's
    /// parameters, the step's, and how each step it depends on ended, with its result or
    /// error. When they do not all fit in a task's metadata, the largest results and errors are
    /// left out, each marked `result_omitted` or `error_omitted` (the agent reads it from that
    /// step's task); the rest always fits (see [`Workflow::least_handed`]).
    fn task_of(&self, workflow: &Workflow, i: usize, now: DateTime<Utc>) -> Task {
        let step = &workflow.steps[i];
        let mut upstream: Map<String, Value> = Map::new();
        // What could be left out: (its size, the step, the key).
        let mut large: Vec<(usize, String, &'static str)> = Vec::new();
        for &j in workflow.needs(i) {
            let run = &self.steps[j];
            let mut outcome = Map::new();
            outcome.insert("status".into(), json!(run.status.as_str()));
            outcome.insert("task_id".into(), json!(run.task_id));
            let (key, value) = match &run.result {
                Some(result) => ("result", Value::Object(result.clone())),
                None => ("error", json!(run.error)),
            };
            large.push((value_size(&value), run.name.clone(), key));
            outcome.insert(key.into(), value);
            upstream.insert(run.name.clone(), Value::Object(outcome));
        }
        let mut metadata = handed(self.parameters.as_map(), step, upstream);
        let mut size = size_of(&metadata);
        if size > MAX_METADATA_BYTES {
            large.sort();
            while size > MAX_METADATA_BYTES {
                let Some((bytes, name, key)) = large.pop() else {
                    break;
                };
                if let Some(Value::Object(outcome)) = metadata["upstream"].get_mut(&name) {
                    outcome.remove(key);
                    outcome.insert(format!("{key}_omitted"), Value::Bool(true));
                }
                // `"result":<value>` gives way to `"result_omitted":true`.
                size = (size + "_omitted".len() + "true".len()).saturating_sub(bytes);
            }
            size = size_of(&metadata);
        }
        debug_assert!(size <= MAX_METADATA_BYTES, "the room was checked");
        let mut new = step.task.clone();
        new.description = format!(
            "Step '{}' of workflow '{}', execution {}",
            step.name, workflow.name, self.id
        );
        new.metadata = Metadata::bounded(metadata);
        let mut task = Task::submit(new, self.steps[i].task_id, now);
        task.workflow_id = Some(self.workflow_id.as_uuid());
        task.execution_id = Some(self.id.as_uuid());
        task.step = Some(step.name.clone());
        task
    }

    /// An execution's event: `status` is the execution's.
    fn event(&self, kind: EventKind, mut data: Value, at: DateTime<Utc>) -> NewEvent {
        data["workflow_id"] = json!(self.workflow_id);
        data["execution_id"] = json!(self.id);
        if data.get("status").is_none() {
            data["status"] = json!(self.status.as_str());
        }
        NewEvent::about_nothing(kind, data, at)
    }

    fn step_event(
        &self,
        kind: EventKind,
        i: usize,
        mut data: Value,
        at: DateTime<Utc>,
    ) -> NewEvent {
        data["step"] = json!(self.steps[i].name);
        data["task_id"] = json!(self.steps[i].task_id);
        // A step's event: `status` is the step's.
        data["status"] = json!(self.steps[i].status.as_str());
        data["execution_status"] = json!(self.status.as_str());
        self.event(kind, data, at)
    }
}

/// The tasks among `written` that belong to an execution and ended or went back to the queue,
/// by execution, in the order of the executions' IDs (the order a store locks them in): what
/// [`Execution::follow`] takes.
pub fn moved_steps<'a>(
    written: impl IntoIterator<Item = &'a Task>,
) -> Vec<(ExecutionId, Vec<&'a Task>)> {
    let mut by: std::collections::BTreeMap<ExecutionId, Vec<&Task>> = Default::default();
    for task in written {
        // Pending again after an agent held it (a lost lease, a retryable failure): a pending
        // task never assigned, whose wait reason a pass rewrites, moves nothing.
        let requeued = task.status == TaskStatus::Pending && task.assigned_at.is_some();
        let moved = task.status.is_terminal() || requeued;
        if let (Some(execution), true) = (task.execution_id, moved) {
            by.entry(ExecutionId(execution)).or_default().push(task);
        }
    }
    by.into_iter().collect()
}

/// The serialized size of a JSON object.
fn size_of(object: &Map<String, Value>) -> usize {
    serde_json::to_vec(object).map_or(usize::MAX, |v| v.len())
}

/// The serialized size of a JSON value.
fn value_size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// The metadata of a step's task: the execution's parameters, the step's, and `upstream`.
fn handed(
    parameters: &Map<String, Value>,
    step: &Step,
    upstream: Map<String, Value>,
) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert(
        "execution_parameters".into(),
        Value::Object(parameters.clone()),
    );
    metadata.insert(
        "step_parameters".into(),
        Value::Object(step.parameters.as_map().clone()),
    );
    metadata.insert("upstream".into(), Value::Object(upstream));
    metadata
}

/// The `workflow_created` event.
pub fn workflow_created(workflow: &Workflow) -> NewEvent {
    NewEvent::about_nothing(
        EventKind::WorkflowCreated,
        json!({
            "workflow_id": workflow.id,
            "name": workflow.name,
            "steps": workflow.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        }),
        workflow.created_at,
    )
}

/// The `workflow_deleted` event.
pub fn workflow_deleted(workflow: &Workflow, at: DateTime<Utc>) -> NewEvent {
    NewEvent::about_nothing(
        EventKind::WorkflowDeleted,
        json!({"workflow_id": workflow.id, "name": workflow.name}),
        at,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
    }

    fn step(name: &str, needs: &[&str]) -> StepInput {
        StepInput {
            name: name.into(),
            depends_on: needs.iter().map(|s| (*s).to_owned()).collect(),
            ..StepInput::default()
        }
    }

    fn parse(steps: Vec<StepInput>) -> Result<Workflow, ValidationErrors> {
        let input = WorkflowInput {
            name: "w".into(),
            steps,
            ..WorkflowInput::default()
        };
        Workflow::parse(input, WorkflowId(uuid::Uuid::from_u128(1)), at(0))
    }

    fn fields(errors: &ValidationErrors) -> Vec<(&str, &str)> {
        errors
            .0
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect()
    }

    #[test]
    fn steps_without_dependencies_run_in_the_order_given() {
        let w = parse(vec![step("a", &[]), step("b", &[]), step("c", &[])]).unwrap();
        assert_eq!(w.needs(0), &[] as &[usize]);
        assert_eq!(w.needs(1), &[0]);
        assert_eq!(w.needs(2), &[1]);
        let w = parse(vec![step("a", &[]), step("b", &[]), step("c", &["a"])]).unwrap();
        assert_eq!(
            w.needs(1),
            &[] as &[usize],
            "named dependencies decide alone"
        );
        assert_eq!(w.downstream_of(0), HashSet::from([0, 2]));
    }

    #[test]
    fn bad_definitions_name_the_step_at_fault() {
        let cycle = parse(vec![
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"]),
        ]);
        assert_eq!(
            fields(&cycle.unwrap_err()),
            [(
                "steps[0].depends_on",
                "steps form a cycle: a -> b -> c -> a"
            )]
        );
        let own = parse(vec![step("a", &[]), step("b", &["b"])]).unwrap_err();
        assert_eq!(
            fields(&own),
            [("steps[1].depends_on", "step 'b' cannot depend on itself")]
        );
        let unknown = parse(vec![step("a", &["nope"])]).unwrap_err();
        assert_eq!(
            fields(&unknown),
            [(
                "steps[0].depends_on",
                "names no step of this workflow: 'nope'"
            )]
        );
        let twice = parse(vec![step("a", &[]), step(" a ", &[])]).unwrap_err();
        assert_eq!(
            fields(&twice),
            [("steps[1].name", "step 'a' is named twice")]
        );
        assert_eq!(
            fields(&parse(vec![]).unwrap_err()),
            [("steps", "must have at least one step")]
        );
        let mut late = step("b", &["nope"]);
        late.priority = Some(11);
        let both = parse(vec![step("a", &[]), late]).unwrap_err();
        assert_eq!(
            fields(&both).iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            ["steps[1].depends_on", "steps[1].priority"],
            "the graph is checked whatever else is wrong"
        );
        let long = parse(vec![step("a", &[&"y".repeat(5000)])]).unwrap_err();
        assert!(
            long.0[0].message.len() < 300,
            "what is quoted back is bounded"
        );
        let many: Vec<StepInput> = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), &["s300"]))
            .collect();
        assert_eq!(
            fields(&parse(many).unwrap_err()),
            [("steps", "must have at most 200 steps")],
            "the count alone"
        );
        let tangled: Vec<StepInput> = (0..MAX_STEPS)
            .map(|i| {
                let mut s = step(&format!("s{i}"), &[]);
                s.depends_on = (0..MAX_STEPS).map(|j| format!("nope{j}")).collect();
                s
            })
            .collect();
        assert_eq!(
            parse(tangled).unwrap_err().0.len(),
            MAX_GRAPH_ERRORS,
            "bounded"
        );
        let mut heavy = step("b", &["a"]);
        heavy.parameters = Map::from_iter([("blob".to_owned(), json!("x".repeat(65_400)))]);
        assert_eq!(
            fields(&parse(vec![step("a", &[]), heavy]).unwrap_err())[0].0,
            "steps[1].parameters",
            "a step that could never run is refused when it is defined"
        );
        let mut typed = step("a", &[]);
        typed.kind = Some("shell".into());
        assert_eq!(
            fields(&parse(vec![typed]).unwrap_err())[0].0,
            "steps[0].type"
        );
        let mut nameless = step("", &[]);
        nameless.priority = Some(0);
        assert_eq!(
            fields(&parse(vec![nameless]).unwrap_err())
                .iter()
                .map(|(f, _)| *f)
                .collect::<Vec<_>>(),
            ["steps[0].name", "steps[0].priority"]
        );
    }

    fn started(w: &Workflow) -> (Execution, Vec<Task>) {
        let mut next = 0u128;
        let (x, advance) = Execution::start(
            w,
            ExecutionId(uuid::Uuid::from_u128(9)),
            ExecutionInput::default(),
            || {
                next += 1;
                TaskId(uuid::Uuid::from_u128(next))
            },
            at(0),
        )
        .unwrap();
        (x, advance.created)
    }

    #[test]
    fn a_task_requeued_after_its_execution_failed_is_cancelled_not_run_again() {
        let w = parse(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]).unwrap();
        let (mut x, roots) = started(&w);
        let a_failed = end(roots[0].clone(), TaskStatus::Failed, 1);
        let failed = x.follow(&w, &[&a_failed]).unwrap();
        assert_eq!(x.status, ExecutionStatus::Failed);
        assert_eq!(
            failed.to_cancel,
            vec![roots[1].id],
            "B's queued task, if still queued"
        );
        // B was held; its lease runs out and it goes back to the queue: cancelled instead.
        let mut b = roots[1].clone();
        b.version = 4;
        b.updated_at = at(2);
        let moved = x.follow(&w, &[&b]).unwrap();
        assert_eq!(moved.requeued.len(), 1);
        assert_eq!(moved.requeued[0].status, TaskStatus::Cancelled);
        assert_eq!(
            moved.requeued[0].version, 5,
            "over the version the same write stores"
        );
        assert_eq!(x.steps[1].status, StepStatus::Cancelled);
        assert_eq!(
            moved.requeued[0].error.as_deref(),
            Some("cancelled: its execution failed")
        );
        assert_eq!(x.updated_at, at(2));
        // So under a cancelled execution; and a pending task never held moves nothing.
        let (mut cancelled, roots) = started(&w);
        cancelled.cancel(at(1)).unwrap();
        let mut lost = roots[0].clone();
        lost.assigned_at = Some(at(1));
        lost.updated_at = at(2);
        assert_eq!(cancelled.follow(&w, &[&lost]).unwrap().requeued.len(), 1);
        assert!(
            moved_steps([&roots[1]]).is_empty(),
            "never held: a pass's rewrite"
        );
        assert_eq!(moved_steps([&lost]).len(), 1);
        // While the execution runs, a task back in the queue is just retried.
        let (mut running, roots) = started(&w);
        assert!(running.follow(&w, &[&roots[0]]).is_none());
    }

    #[test]
    fn one_write_ending_a_success_and_a_failure_fails_without_starting_anything() {
        let w = parse(vec![step("a", &[]), step("b", &[]), step("c", &["a"])]).unwrap();
        for order in [[0, 1], [1, 0]] {
            let (mut x, roots) = started(&w);
            let a = end(roots[0].clone(), TaskStatus::Completed, 1);
            let b = end(roots[1].clone(), TaskStatus::Failed, 1);
            let ends = [&a, &b];
            let advance = x.follow(&w, &[ends[order[0]], ends[order[1]]]).unwrap();
            assert!(advance.created.is_empty(), "C never starts");
            assert_eq!(x.status, ExecutionStatus::Failed);
            assert_eq!(x.steps[2].status, StepStatus::Cancelled);
        }
    }

    #[test]
    fn a_rerun_waits_for_held_tasks_and_reruns_whatever_depends_on_a_step_it_reruns() {
        let mut lenient = step("b", &["a"]);
        lenient.continue_on_failure = Some(true);
        let w = parse(vec![
            step("a", &[]),
            lenient,
            step("c", &["b"]),
            step("d", &["a"]),
        ])
        .unwrap();
        let (mut x, roots) = started(&w);
        let a = end(roots[0].clone(), TaskStatus::Completed, 1);
        let queued = x.follow(&w, &[&a]).unwrap().created;
        let b = queued
            .iter()
            .find(|t| t.step.as_deref() == Some("b"))
            .unwrap();
        let d = queued
            .iter()
            .find(|t| t.step.as_deref() == Some("d"))
            .unwrap();
        let b = end(b.clone(), TaskStatus::Failed, 2);
        let c = x.follow(&w, &[&b]).unwrap().created.remove(0);
        let c = end(c, TaskStatus::Completed, 3);
        x.follow(&w, &[&c]).unwrap();
        // D still runs: cancel the execution, and a rerun waits for D's task to end.
        let (running, _) = x.cancel(at(4)).unwrap();
        assert_eq!(running, vec![d.id]);
        let mut ids = (100u128..).map(|n| TaskId(uuid::Uuid::from_u128(n)));
        let refused = x.rerun(&w, "a", || ids.next().unwrap(), at(5)).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("step 'd' still has a task running"),
            "{refused}"
        );
        let mut d = d.clone();
        d.cancel(at(5)).unwrap();
        d.cancel(at(5)).unwrap_err();
        let d = end(d, TaskStatus::Cancelled, 6);
        x.follow(&w, &[&d]).unwrap();
        // From D: D, and B (failed) with C, which ran on B's failure; A keeps its result.
        let advance = x.rerun(&w, "d", || ids.next().unwrap(), at(7)).unwrap();
        assert_eq!(x.reruns[0].steps, ["b", "c", "d"]);
        assert_eq!(x.steps[0].status, StepStatus::Completed);
        let again: Vec<_> = advance
            .created
            .iter()
            .map(|t| t.step.clone().unwrap())
            .collect();
        assert_eq!(again, ["b", "d"]);
        let unknown = x.rerun(&w, &"z".repeat(500), || ids.next().unwrap(), at(8));
        assert_eq!(
            unknown.unwrap_err().to_string(),
            "from_step: names no step of this workflow"
        );
    }

    #[test]
    fn what_a_step_is_handed_fits_its_task_and_nothing_is_dropped_unmarked() {
        let big = |kb: usize| Map::from_iter([("blob".to_owned(), json!("x".repeat(kb * 1024)))]);
        let w = parse(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]).unwrap();
        let (mut x, roots) = started(&w);
        let mut a = end(roots[0].clone(), TaskStatus::Completed, 1);
        a.result = Some(big(40));
        let mut b = end(roots[1].clone(), TaskStatus::Completed, 1);
        b.result = Some(big(30));
        let c = x.follow(&w, &[&a, &b]).unwrap().created.remove(0);
        let upstream = &c.metadata.as_map()["upstream"];
        assert!(
            upstream["a"]["result"].is_null(),
            "the larger one is left out"
        );
        assert_eq!(upstream["a"]["result_omitted"], true);
        assert_eq!(upstream["a"]["task_id"], json!(roots[0].id));
        assert!(
            upstream["b"]["result"] == json!(big(30)),
            "the smaller one fits"
        );
        assert!(!c.metadata.as_map().contains_key(crate::metadata::TRUNCATED));
        // Parameters that would leave no room are refused when the execution starts.
        let c = w.step_index("c").unwrap();
        let room = MAX_METADATA_BYTES - w.least_handed(c, &Map::new());
        // A string of `n` characters takes `n` plus the key and the quoting in the object.
        let filler = |n: usize| Map::from_iter([("blob".to_owned(), json!("x".repeat(n)))]);
        let overhead = size_of(&filler(0));
        let exact = filler(room + 2 - overhead);
        assert_eq!(w.least_handed(c, &exact), MAX_METADATA_BYTES);
        let fits = ExecutionInput {
            parameters: exact,
            ..ExecutionInput::default()
        };
        assert!(
            Execution::start(&w, x.id, fits, || roots[0].id, at(0)).is_ok(),
            "to the byte"
        );
        let parameters = filler(room + 3 - overhead);
        assert!(
            Metadata::parse(parameters.clone()).is_ok(),
            "fits on its own"
        );
        let input = ExecutionInput {
            parameters,
            ..ExecutionInput::default()
        };
        let refused = Execution::start(&w, x.id, input, || roots[0].id, at(0));
        assert_eq!(refused.map(|_| ()).unwrap_err().0[0].field, "parameters");
    }

    /// Ends `task` as `status` at `secs`.
    fn end(mut task: Task, status: TaskStatus, secs: i64) -> Task {
        task.status = status;
        task.updated_at = at(secs);
        task.completed_at = Some(at(secs));
        if status == TaskStatus::Completed {
            task.result = Some(Map::from_iter([("by".to_owned(), json!(task.step))]));
        } else {
            task.error = Some("broke".into());
        }
        task
    }

    /// A DAG of `n` steps, each depending on some of those before it, listed in a shuffled
    /// order (so the list order is not the run order), and the order in which ready tasks end.
    fn dags() -> impl Strategy<Value = (Vec<StepInput>, Vec<usize>, Option<usize>)> {
        (1usize..10)
            .prop_flat_map(|n| {
                let needs =
                    proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n);
                let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
                let picks = proptest::collection::vec(any::<usize>(), 4 * n);
                let failing = proptest::option::weighted(0.3, 0..n);
                (needs, order, picks, failing)
            })
            .prop_map(|(needs, order, picks, failing)| {
                let n = order.len();
                let mut steps: Vec<StepInput> = (0..n)
                    .map(|i| {
                        let before: Vec<String> = (0..i)
                            .filter(|&j| needs[i][j])
                            .map(|j| format!("s{j}"))
                            .collect();
                        StepInput {
                            name: format!("s{i}"),
                            depends_on: before,
                            ..StepInput::default()
                        }
                    })
                    .collect();
                // Give one step a dependency at least, so the DAG decides, not the list.
                if n > 1 && steps.iter().all(|s| s.depends_on.is_empty()) {
                    steps[n - 1].depends_on.push("s0".into());
                }
                let shuffled = order.iter().map(|&i| steps[i].clone()).collect();
                (shuffled, picks, failing)
            })
    }

    proptest! {
        /// However the steps are listed and whichever ready task ends first (several at once
        /// at times), every step runs exactly once and never before the steps it depends on;
        /// a step that fails ends the execution and nothing starts after it.
        #[test]
        fn every_step_runs_once_and_never_before_its_dependencies((steps, picks, failing) in dags()) {
            let w = parse(steps).unwrap();
            let mut next = 0u128;
            let mut ids = || { next += 1; TaskId(uuid::Uuid::from_u128(next)) };
            let (mut x, advance) = Execution::start(
                &w, ExecutionId(uuid::Uuid::from_u128(9)), ExecutionInput::default(), &mut ids, at(0),
            ).unwrap();
            let mut queued: Vec<Task> = advance.created;
            let mut created: HashMap<String, usize> = HashMap::new();
            let mut completed: HashSet<String> = HashSet::new();
            let mut failed_at = None;
            for t in &queued {
                *created.entry(t.step.clone().unwrap()).or_default() += 1;
            }
            let mut clock = 1;
            for pick in picks {
                if queued.is_empty() {
                    break;
                }
                // One task ends, or, on odd picks, two at once.
                let mut ending = vec![queued.remove(pick % queued.len())];
                if pick % 2 == 1 && !queued.is_empty() {
                    ending.push(queued.remove(pick % queued.len()));
                }
                let ended: Vec<Task> = ending.into_iter().map(|t| {
                    let index = w.step_index(t.step.as_deref().unwrap()).unwrap();
                    let status = if Some(index) == failing.map(|f| f % w.steps.len()) {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Completed
                    };
                    end(t, status, clock)
                }).collect();
                clock += 1;
                for t in &ended {
                    if t.status == TaskStatus::Completed {
                        completed.insert(t.step.clone().unwrap());
                    } else {
                        failed_at.get_or_insert(clock);
                    }
                }
                let refs: Vec<&Task> = ended.iter().collect();
                let advance = x.follow(&w, &refs).expect("a running step's task moves it");
                prop_assert!(x.follow(&w, &refs).is_none(), "the same ends move nothing twice");
                if x.status == ExecutionStatus::Failed {
                    prop_assert!(advance.created.is_empty(), "a step started as the execution failed");
                }
                prop_assert!(advance.created.iter().all(|t| !advance.to_cancel.contains(&t.id)));
                for t in advance.created {
                    let name = t.step.clone().unwrap();
                    let i = w.step_index(&name).unwrap();
                    for &j in w.needs(i) {
                        prop_assert!(completed.contains(&w.steps[j].name),
                            "{name} started before {}", w.steps[j].name);
                    }
                    *created.entry(name).or_default() += 1;
                    queued.push(t);
                }
                let (cancel, keep): (Vec<Task>, Vec<Task>) = queued
                    .into_iter()
                    .partition(|t| advance.to_cancel.contains(&t.id));
                queued = keep;
                let (cancelled, _) = x.cancel_unstarted(cancel, at(clock));
                prop_assert!(cancelled.iter().all(|t| t.status == TaskStatus::Cancelled));
            }
            prop_assert!(created.values().all(|&n| n == 1), "{created:?}");
            match failed_at {
                None => {
                    prop_assert_eq!(x.status, ExecutionStatus::Completed);
                    prop_assert_eq!(created.len(), w.steps.len());
                    prop_assert!(x.steps.iter().all(|s| s.status == StepStatus::Completed));
                }
                Some(_) => {
                    prop_assert_eq!(x.status, ExecutionStatus::Failed);
                    prop_assert!(x.steps.iter().all(StepRun::ended), "{:?}", x.steps);
                }
            }
        }
    }
}
