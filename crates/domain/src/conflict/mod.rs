//! Conflicts: reported by agents and operators, or detected by the platform, and resolved by
//! strategies that are pure functions.
//!
//! - this module: the entity, reports, resolutions, and what a detector found;
//! - [`kinds`]: the named kinds, severities, statuses, sources and strategies;
//! - [`strategies`]: how each strategy decides, as a [`Decision`] the platform applies;
//! - [`detection`]: what the platform detects on its own, and when a detected cause is gone.

mod detection;
mod kinds;
mod strategies;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::validation::ValidationErrors;
use crate::{AgentId, Metadata, ResourceId, TaskId};

pub use detection::{
    capability_gap, cause_gone, contention, deadline_missed, lease_expired, needs_capability_check,
    stale_report, Cause, MAX_LISTED,
};
pub use kinds::{ConflictStatus, ConflictType, Severity, Source, Strategy};
pub use strategies::{decide, Context, Decision, Effect};

/// Longest description or manual resolution text.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Most agents or tasks one conflict lists.
pub const MAX_INVOLVED: usize = 100;

/// How a conflict ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// `None` when a detected conflict closed itself because its cause went away.
    pub strategy: Option<Strategy>,
    pub outcome: String,
    /// A user, an API key, or `platform`.
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    /// What the strategy found and did, for the record.
    pub details: Value,
}

/// A conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub id: crate::ConflictId,
    pub agent_id: Option<AgentId>,
    pub task_id: Option<TaskId>,
    pub conflict_type: ConflictType,
    pub description: String,
    pub severity: Severity,
    pub metadata: Metadata,
    pub status: ConflictStatus,
    pub source: Source,
    pub involved_agents: Vec<AgentId>,
    pub involved_tasks: Vec<TaskId>,
    pub resource_id: Option<ResourceId>,
    pub resolution: Option<Resolution>,
    /// For detected conflicts, the cause (`resource_contention:<pool>`, ...): one cause has at
    /// most one open conflict.
    pub cause: Option<Cause>,
    /// Who reported it (a user, an API key, an agent), or `platform`.
    pub reported_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// What a detection lists of who is involved (at most [`MAX_INVOLVED`] of each, the rest
/// counted in the metadata as `involved_agents_not_listed` and `involved_tasks_not_listed`),
/// and its metadata, bounded.
fn listed(found: &Detection) -> (Vec<AgentId>, Vec<TaskId>, Metadata) {
    let mut metadata = found.metadata.clone();
    let mut agents = found.involved_agents.clone();
    let mut tasks = found.involved_tasks.clone();
    for (key, left_out) in [
        (
            "involved_agents_not_listed",
            agents.len().saturating_sub(MAX_INVOLVED),
        ),
        (
            "involved_tasks_not_listed",
            tasks.len().saturating_sub(MAX_INVOLVED),
        ),
    ] {
        if left_out > 0 {
            metadata.insert(key.into(), left_out.into());
        }
    }
    agents.truncate(MAX_INVOLVED);
    tasks.truncate(MAX_INVOLVED);
    (agents, tasks, Metadata::bounded(metadata))
}

/// A validated report, as the seed's `POST /conflicts` sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictReport {
    pub agent_id: Option<AgentId>,
    pub task_id: Option<TaskId>,
    pub conflict_type: ConflictType,
    pub description: String,
    pub severity: Severity,
    pub metadata: Metadata,
}

impl ConflictReport {
    pub fn parse(
        agent_id: Option<&str>,
        task_id: Option<&str>,
        conflict_type: &str,
        description: &str,
        severity: &str,
        metadata: Map<String, Value>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let agent_id = agent_id.and_then(|a| {
            errors.collect(
                "agent_id",
                a.parse::<AgentId>()
                    .map_err(|_| "must be the ID of a registered agent"),
            )
        });
        let task_id = task_id.and_then(|t| {
            errors.collect(
                "task_id",
                t.parse::<TaskId>()
                    .map_err(|_| "must be the ID of an existing task"),
            )
        });
        let conflict_type = errors.collect("conflict_type", conflict_type.parse::<ConflictType>());
        let description = errors.collect("description", check_text(description));
        let severity = errors.collect("severity", severity.parse::<Severity>());
        let metadata = errors.collect("metadata", Metadata::parse(metadata));
        match (conflict_type, description, severity, metadata) {
            (Some(conflict_type), Some(description), Some(severity), Some(metadata))
                if errors.is_empty() =>
            {
                Ok(Self {
                    agent_id,
                    task_id,
                    conflict_type,
                    description,
                    severity,
                    metadata,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A non-empty text of at most [`MAX_TEXT_CHARS`].
pub fn check_text(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("must be at most {MAX_TEXT_CHARS} characters"));
    }
    Ok(text.to_owned())
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub conflict_type: ConflictType,
    pub severity: Severity,
    pub description: String,
    pub cause: Cause,
    pub agent_id: Option<AgentId>,
    pub task_id: Option<TaskId>,
    pub involved_agents: Vec<AgentId>,
    pub involved_tasks: Vec<TaskId>,
    pub resource_id: Option<ResourceId>,
    pub metadata: Map<String, Value>,
}

/// Why a conflict cannot move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflictError {
    #[error("conflict is {0}, not open")]
    NotOpen(ConflictStatus),
}

impl Conflict {
    pub fn report(
        id: crate::ConflictId,
        report: ConflictReport,
        reported_by: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            involved_agents: report.agent_id.into_iter().collect(),
            involved_tasks: report.task_id.into_iter().collect(),
            // Resolved against the registered pools by the platform.
            resource_id: None,
            agent_id: report.agent_id,
            task_id: report.task_id,
            conflict_type: report.conflict_type,
            description: report.description,
            severity: report.severity,
            metadata: report.metadata,
            status: ConflictStatus::Open,
            source: Source::Reported,
            resolution: None,
            cause: None,
            reported_by: reported_by.to_owned(),
            created_at: now,
            updated_at: now,
            resolved_at: None,
            version: 0,
        }
    }

    pub fn detect(id: crate::ConflictId, found: Detection, now: DateTime<Utc>) -> Self {
        let (involved_agents, involved_tasks, metadata) = listed(&found);
        Self {
            id,
            agent_id: found.agent_id,
            task_id: found.task_id,
            conflict_type: found.conflict_type,
            description: found.description,
            severity: found.severity,
            metadata,
            status: ConflictStatus::Open,
            source: Source::Detected,
            involved_agents,
            involved_tasks,
            resource_id: found.resource_id,
            resolution: None,
            cause: Some(found.cause),
            reported_by: "platform".into(),
            created_at: now,
            updated_at: now,
            resolved_at: None,
            version: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.status == ConflictStatus::Open
    }

    /// Whether `agent` is part of this conflict.
    pub fn involves(&self, agent: AgentId) -> bool {
        self.agent_id == Some(agent) || self.involved_agents.contains(&agent)
    }

    /// Refreshes who is involved in a detected conflict that is still going on. Returns
    /// whether anything changed.
    pub fn refresh(&mut self, found: &Detection, now: DateTime<Utc>) -> bool {
        let (agents, tasks, found_metadata) = listed(found);
        if self.involved_agents == agents
            && self.involved_tasks == tasks
            && self.description == found.description
        {
            return false;
        }
        self.involved_agents = agents;
        self.involved_tasks = tasks;
        self.description = found.description.clone();
        // What the detector found now replaces what it found before; notes of its own (the
        // actions taken) stay.
        let mut metadata = self.metadata.clone().into_map();
        metadata.remove(crate::metadata::TRUNCATED);
        metadata.extend(found_metadata.into_map());
        self.metadata = Metadata::bounded(metadata);
        self.updated_at = now;
        true
    }

    pub fn resolve(&mut self, resolution: Resolution) -> Result<(), ConflictError> {
        if !self.is_open() {
            return Err(ConflictError::NotOpen(self.status));
        }
        self.status = ConflictStatus::Resolved;
        self.resolved_at = Some(resolution.decided_at);
        self.updated_at = resolution.decided_at;
        self.resolution = Some(resolution);
        Ok(())
    }

    pub fn dismiss(
        &mut self,
        reason: String,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ConflictError> {
        if !self.is_open() {
            return Err(ConflictError::NotOpen(self.status));
        }
        self.status = ConflictStatus::Dismissed;
        self.resolved_at = Some(now);
        self.updated_at = now;
        self.resolution = Some(Resolution {
            strategy: None,
            outcome: format!("dismissed: {reason}"),
            decided_by: decided_by.to_owned(),
            decided_at: now,
            details: json!({"dismissed": true}),
        });
        Ok(())
    }
}
