//! Tasks: submission, the status machine, leases, retries and attempts.
//!
//! A task moves `pending → assigned → running → completed | failed`, and may also end
//! `cancelled` or `expired`. Every call an agent makes carries the `attempt` it was assigned;
//! a stale attempt is refused, so a task never has two live owners.
//!
//! Longer than most modules on purpose: every transition of the one state machine is here, so
//! each can be read beside the others it must agree with.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::validation::check_name;
use crate::{AgentId, CapabilitySet, Metadata, ResourceMap, ValidationErrors};

/// Default and bounds of `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_ATTEMPTS: u32 = 100;
/// Default and bounds of `lease_seconds`.
pub const DEFAULT_LEASE_SECONDS: u32 = 60;
pub const MIN_LEASE_SECONDS: u32 = 5;
pub const MAX_LEASE_SECONDS: u32 = 86_400;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Longest error message an agent may report.
pub const MAX_ERROR_CHARS: usize = 10_000;
/// Most resource claims one task may make.
pub const MAX_CLAIMS: usize = 16;
/// First retry delay; each further attempt doubles it, up to [`MAX_BACKOFF_SECS`].
pub const BASE_BACKOFF_SECS: i64 = 2;
pub const MAX_BACKOFF_SECS: i64 = 300;

pub use crate::ids::TaskId;

/// A priority from 1 (lowest) to 10 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub const LOWEST: Priority = Priority(1);
    pub const HIGHEST: Priority = Priority(10);

    pub fn new(value: i64) -> Result<Self, String> {
        if (1..=10).contains(&value) {
            Ok(Self(value as u8))
        } else {
            Err("must be between 1 and 10".into())
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

named_enum!(
    /// Where a task is in its life.
    TaskStatus, "status" {
            Pending => "pending",
            Assigned => "assigned",
            Running => "running",
            Completed => "completed",
            Failed => "failed",
            Cancelled => "cancelled",
            Expired => "expired",
    }
);

impl TaskStatus {
    /// Held by an agent: assigned or running.
    pub fn is_active(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::Running)
    }

    /// Finished for good (until an operator retries it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Expired
        )
    }
}

/// A claim on a shared resource pool, by the pool's ID or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceClaim {
    pub resource: String,
    pub amount: ResourceMap,
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub required_capabilities: CapabilitySet,
    pub resources: ResourceMap,
    pub deadline: Option<DateTime<Utc>>,
    pub metadata: Metadata,
    pub max_attempts: u32,
    pub lease_seconds: u32,
    pub resource_claims: Vec<ResourceClaim>,
    pub preemptible: bool,
}

/// The raw fields of a submission, as they arrive.
#[derive(Debug, Clone, Default)]
pub struct TaskInput {
    pub title: String,
    pub description: Option<String>,
    pub priority: Option<i64>,
    pub required_capabilities: Vec<String>,
    pub resources: Map<String, Value>,
    pub deadline: Option<DateTime<Utc>>,
    pub metadata: Map<String, Value>,
    pub max_attempts: Option<i64>,
    pub lease_seconds: Option<i64>,
    /// (resource ID or name, amount)
    pub resource_claims: Vec<(String, Map<String, Value>)>,
    pub preemptible: Option<bool>,
}

impl NewTask {
    /// Checks every field against the rules, at time `now`, and reports every problem at once.
    pub fn parse(input: TaskInput, now: DateTime<Utc>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let title = errors.collect("title", check_name(&input.title));
        let description = input.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.push(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
        let priority = errors.collect("priority", Priority::new(input.priority.unwrap_or(1)));
        let capabilities = absorb(
            &mut errors,
            CapabilitySet::parse("required_capabilities", &input.required_capabilities),
        );
        let resources = absorb(
            &mut errors,
            ResourceMap::from_json("resources", &input.resources),
        );
        if let Some(deadline) = input.deadline {
            if deadline <= now {
                errors.push("deadline", "must be in the future");
            }
        }
        let metadata = errors.collect("metadata", Metadata::parse(input.metadata));
        let max_attempts = errors.collect(
            "max_attempts",
            bounded(input.max_attempts, DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS),
        );
        let lease_seconds = errors.collect(
            "lease_seconds",
            bounded(
                input.lease_seconds,
                DEFAULT_LEASE_SECONDS,
                MIN_LEASE_SECONDS,
                MAX_LEASE_SECONDS,
            ),
        );
        if input.resource_claims.len() > MAX_CLAIMS {
            errors.push(
                "resource_claims",
                format!("must have at most {MAX_CLAIMS} entries"),
            );
        }
        let mut claims = Vec::new();
        for (i, (resource, amount)) in input.resource_claims.iter().enumerate() {
            let field = format!("resource_claims[{i}]");
            let resource = resource.trim();
            if resource.is_empty() || resource.chars().count() > crate::validation::MAX_NAME_CHARS {
                errors.push(
                    format!("{field}.resource_id"),
                    "must name a resource by ID or name",
                );
                continue;
            }
            let amount = absorb(
                &mut errors,
                ResourceMap::from_json(&format!("{field}.amount"), amount),
            );
            match amount {
                Some(a) if a.is_empty() || a.iter().all(|(_, q)| q.is_zero()) => {
                    errors.push(format!("{field}.amount"), "must claim a positive amount")
                }
                Some(a) => claims.push(ResourceClaim {
                    resource: resource.to_owned(),
                    amount: a,
                }),
                None => {}
            }
        }
        match (
            title,
            priority,
            capabilities,
            resources,
            metadata,
            max_attempts,
            lease_seconds,
        ) {
            (
                Some(title),
                Some(priority),
                Some(caps),
                Some(resources),
                Some(metadata),
                Some(max),
                Some(lease),
            ) if errors.is_empty() => Ok(Self {
                title,
                description,
                priority,
                required_capabilities: caps,
                resources,
                deadline: input.deadline,
                metadata,
                max_attempts: max,
                lease_seconds: lease,
                resource_claims: claims,
                preemptible: input.preemptible.unwrap_or(false),
            }),
            _ => Err(errors),
        }
    }
}

fn absorb<T>(errors: &mut ValidationErrors, result: Result<T, ValidationErrors>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(more) => {
            errors.0.extend(more.0);
            None
        }
    }
}

fn bounded(value: Option<i64>, default: u32, min: u32, max: u32) -> Result<u32, String> {
    let v = value.unwrap_or(i64::from(default));
    if (i64::from(min)..=i64::from(max)).contains(&v) {
        Ok(v as u32)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

/// Why an agent's call on a task was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The caller's attempt is not the task's current one, or the task is not theirs.
    #[error("stale attempt: {0}")]
    Stale(String),
    /// The task's status does not allow this.
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    Invalid(ValidationErrors),
}

/// What a transition did, for the events it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Assigned,
    Started,
    Progress,
    Completed,
    /// Back in the queue after a failure or a lost lease, with a new attempt number.
    Requeued,
    /// Back in the queue to make room for a more important task: no fault of its agent's.
    Preempted,
    Failed,
    Cancelled,
    /// Cancellation requested; the agent learns it from its next heartbeat.
    CancelRequested,
    Expired,
    Retried,
}

/// A submitted task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub required_capabilities: CapabilitySet,
    pub resources: ResourceMap,
    pub deadline: Option<DateTime<Utc>>,
    pub metadata: Metadata,
    pub status: TaskStatus,
    pub assigned_agent: Option<AgentId>,
    /// The current attempt, from 1. Agents quote it on every call. It only ever grows, so an
    /// agent from an earlier attempt can never be mistaken for the current one.
    pub attempt: u32,
    /// The first attempt of the current round: 1, or the attempt an operator's retry started.
    /// `max_attempts` counts from here.
    pub round_start: u32,
    pub max_attempts: u32,
    pub lease_seconds: u32,
    pub preemptible: bool,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub progress: Option<f64>,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub resource_claims: Vec<ResourceClaim>,
    pub workflow_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    pub step: Option<String>,
    pub pending_reason: Option<crate::WaitReason>,
    /// A pending task is not scheduled before this (retry backoff).
    pub not_before: DateTime<Utc>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Task {
    pub fn submit(new: NewTask, id: TaskId, now: DateTime<Utc>) -> Self {
        Self {
            id,
            title: new.title,
            description: new.description,
            priority: new.priority,
            required_capabilities: new.required_capabilities,
            resources: new.resources,
            deadline: new.deadline,
            metadata: new.metadata,
            status: TaskStatus::Pending,
            assigned_agent: None,
            attempt: 1,
            round_start: 1,
            max_attempts: new.max_attempts,
            lease_seconds: new.lease_seconds,
            preemptible: new.preemptible,
            lease_expires_at: None,
            assigned_at: None,
            started_at: None,
            completed_at: None,
            progress: None,
            result: None,
            error: None,
            resource_claims: new.resource_claims,
            workflow_id: None,
            execution_id: None,
            step: None,
            pending_reason: None,
            not_before: now,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    fn lease(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + Duration::seconds(i64::from(self.lease_seconds))
    }

    /// Refuses a call from anyone but the current holder of the current attempt.
    fn check_holder(&self, agent: AgentId, attempt: u32) -> Result<(), TaskError> {
        if !self.status.is_active() || self.assigned_agent != Some(agent) {
            return Err(TaskError::Stale(format!(
                "task {} is not assigned to agent {agent}",
                self.id
            )));
        }
        if attempt != self.attempt {
            return Err(TaskError::Stale(format!(
                "attempt {attempt} is not the current attempt ({}) of task {}",
                self.attempt, self.id
            )));
        }
        Ok(())
    }

    /// Hands the task to an agent under a fresh lease.
    pub fn assign(&mut self, agent: AgentId, now: DateTime<Utc>) -> Result<Outcome, TaskError> {
        if self.status != TaskStatus::Pending {
            return Err(TaskError::InvalidTransition(format!(
                "a {} task cannot be assigned",
                self.status
            )));
        }
        self.status = TaskStatus::Assigned;
        self.assigned_agent = Some(agent);
        self.assigned_at = Some(now);
        self.started_at = None;
        self.progress = None;
        self.lease_expires_at = Some(self.lease(now));
        self.pending_reason = None;
        self.updated_at = now;
        Ok(Outcome::Assigned)
    }

    /// The agent starts work; the lease is renewed.
    pub fn start(
        &mut self,
        agent: AgentId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Outcome, TaskError> {
        self.check_holder(agent, attempt)?;
        if self.status == TaskStatus::Running {
            return Err(TaskError::InvalidTransition(format!(
                "task {} is already running",
                self.id
            )));
        }
        self.status = TaskStatus::Running;
        self.started_at = Some(now);
        self.lease_expires_at = Some(self.lease(now));
        self.updated_at = now;
        Ok(Outcome::Started)
    }

    /// The agent reports it is alive (and, optionally, how far along it is); the lease is
    /// renewed. Returns whether cancellation was requested.
    pub fn heartbeat(
        &mut self,
        agent: AgentId,
        attempt: u32,
        progress: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, TaskError> {
        self.check_holder(agent, attempt)?;
        if self.status != TaskStatus::Running {
            return Err(TaskError::InvalidTransition(format!(
                "task {} has not been started; start it before sending heartbeats",
                self.id
            )));
        }
        if let Some(p) = progress {
            if !(0.0..=1.0).contains(&p) {
                return Err(TaskError::Invalid(ValidationErrors::single(
                    "progress",
                    "must be between 0 and 1",
                )));
            }
            self.progress = Some(p);
        }
        self.lease_expires_at = Some(self.lease(now));
        self.updated_at = now;
        Ok(Outcome::Progress)
    }

    /// The agent finished. A task whose cancellation was requested ends `cancelled`.
    pub fn complete(
        &mut self,
        agent: AgentId,
        attempt: u32,
        result: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, TaskError> {
        self.check_holder(agent, attempt)?;
        let result = Metadata::parse(result)
            .map_err(|m| TaskError::Invalid(ValidationErrors::single("result", m)))?;
        self.finish(now);
        if self.cancel_requested {
            self.status = TaskStatus::Cancelled;
            return Ok(Outcome::Cancelled);
        }
        self.status = TaskStatus::Completed;
        self.result = Some(result.into_map());
        self.progress = Some(1.0);
        Ok(Outcome::Completed)
    }

    /// The agent gave up. Retryable failures go back to the queue while attempts remain.
    pub fn fail(
        &mut self,
        agent: AgentId,
        attempt: u32,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> Result<Outcome, TaskError> {
        self.check_holder(agent, attempt)?;
        if error.chars().count() > MAX_ERROR_CHARS {
            return Err(TaskError::Invalid(ValidationErrors::single(
                "error",
                format!("must be at most {MAX_ERROR_CHARS} characters"),
            )));
        }
        self.error = Some(error.to_owned());
        Ok(self.give_back(retryable, now))
    }

    /// The lease ran out, or the agent went offline or away: the attempt is over.
    /// Returns `None` when the task was not held.
    pub fn release(&mut self, reason: &str, now: DateTime<Utc>) -> Option<Outcome> {
        if !self.status.is_active() {
            return None;
        }
        self.error = Some(reason.to_owned());
        Some(self.give_back(true, now))
    }

    /// Sends a held, preemptible task back to the queue to make room for a more important one.
    /// Its next attempt may start at once, and the attempt it loses does not count against
    /// `max_attempts`. `None` if it is not held or not preemptible.
    pub fn preempt(&mut self, reason: &str, now: DateTime<Utc>) -> Option<Outcome> {
        if !self.status.is_active() || !self.preemptible {
            return None;
        }
        self.error = Some(reason.to_owned());
        if self.cancel_requested {
            return Some(self.give_back(false, now));
        }
        self.finish(now);
        self.status = TaskStatus::Pending;
        self.attempt += 1;
        self.round_start += 1;
        self.assigned_agent = None;
        self.completed_at = None;
        self.not_before = now;
        Some(Outcome::Preempted)
    }

    /// True when the task is held and its lease has run out.
    pub fn lease_expired(&self, now: DateTime<Utc>) -> bool {
        self.status.is_active() && self.lease_expires_at.is_some_and(|at| at <= now)
    }

    fn give_back(&mut self, retryable: bool, now: DateTime<Utc>) -> Outcome {
        self.finish(now);
        if self.cancel_requested {
            self.status = TaskStatus::Cancelled;
            return Outcome::Cancelled;
        }
        let used = self.attempt - self.round_start + 1;
        if retryable && used < self.max_attempts {
            let backoff = (BASE_BACKOFF_SECS << (used - 1).min(16)).min(MAX_BACKOFF_SECS);
            self.status = TaskStatus::Pending;
            self.attempt += 1;
            self.assigned_agent = None;
            self.completed_at = None;
            self.not_before = now + Duration::seconds(backoff);
            Outcome::Requeued
        } else {
            self.status = TaskStatus::Failed;
            Outcome::Failed
        }
    }

    fn finish(&mut self, now: DateTime<Utc>) {
        self.lease_expires_at = None;
        self.completed_at = Some(now);
        self.updated_at = now;
    }

    /// An operator cancels. A pending task is cancelled at once; a held one is asked to stop
    /// and ends `cancelled` when its agent next reports or its lease runs out.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<Outcome, TaskError> {
        match self.status {
            TaskStatus::Pending => {
                self.status = TaskStatus::Cancelled;
                self.completed_at = Some(now);
                self.pending_reason = None;
                self.updated_at = now;
                Ok(Outcome::Cancelled)
            }
            s if s.is_active() => {
                if self.cancel_requested {
                    return Err(TaskError::InvalidTransition(format!(
                        "cancellation of task {} was already requested",
                        self.id
                    )));
                }
                self.cancel_requested = true;
                self.updated_at = now;
                Ok(Outcome::CancelRequested)
            }
            s => Err(TaskError::InvalidTransition(format!(
                "a {s} task cannot be cancelled"
            ))),
        }
    }

    /// An operator retries a failed, cancelled or expired task with a fresh round of
    /// `max_attempts` attempts, numbered on from the last one.
    /// A workflow step's task is not retried alone: its execution is rerun from that step.
    pub fn retry(&mut self, now: DateTime<Utc>) -> Result<Outcome, TaskError> {
        if let (Some(execution), Some(step)) = (self.execution_id, &self.step) {
            return Err(TaskError::InvalidTransition(format!(
                "task {} is step '{step}' of workflow execution {execution}: rerun the \
                 execution from that step instead",
                self.id
            )));
        }
        if !matches!(
            self.status,
            TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Expired
        ) {
            return Err(TaskError::InvalidTransition(format!(
                "a {} task cannot be retried",
                self.status
            )));
        }
        if self.deadline.is_some_and(|d| d <= now) {
            return Err(TaskError::InvalidTransition(format!(
                "task {} is past its deadline",
                self.id
            )));
        }
        self.status = TaskStatus::Pending;
        self.attempt += 1;
        self.round_start = self.attempt;
        self.assigned_agent = None;
        self.assigned_at = None;
        self.started_at = None;
        self.completed_at = None;
        self.lease_expires_at = None;
        self.progress = None;
        self.result = None;
        self.error = None;
        self.cancel_requested = false;
        self.not_before = now;
        self.updated_at = now;
        Ok(Outcome::Retried)
    }

    /// A pending task whose deadline has passed expires.
    pub fn expire_if_late(&mut self, now: DateTime<Utc>) -> Option<Outcome> {
        if self.status != TaskStatus::Pending || self.deadline.is_none_or(|d| d > now) {
            return None;
        }
        self.status = TaskStatus::Expired;
        self.completed_at = Some(now);
        self.updated_at = now;
        Some(Outcome::Expired)
    }
}
