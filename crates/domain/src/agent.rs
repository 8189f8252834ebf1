//! Agents: registration, the status state machine, heartbeats and offline detection.
//!
//! Longer than most modules on purpose: the status machine and the changes that move it are kept
//! together, with their unit tests at the end.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::validation::check_name;
use crate::{AgentId, CapabilitySet, Metadata, ResourceMap, ValidationErrors};

/// Default for `max_concurrent_tasks` when the client does not say.
pub const DEFAULT_MAX_CONCURRENT_TASKS: u32 = 1;
/// Largest `max_concurrent_tasks` accepted.
pub const MAX_CONCURRENT_TASKS: u32 = 10_000;
/// Reliability of an agent with no track record yet.
pub const INITIAL_RELIABILITY: f64 = 1.0;
/// Weight of the past in the reliability average: each outcome moves it 10 % of the way.
pub const RELIABILITY_DECAY: f64 = 0.9;

named_enum!(
    /// Where an agent is in its life.
    AgentStatus, "status" {
            /// Online, no tasks.
            Idle => "idle",
            /// Online, some tasks, room for more.
            Active => "active",
            /// Online, at capacity.
            Busy => "busy",
            /// Finishes its tasks, takes no new ones.
            Draining => "draining",
            /// Missed its heartbeats.
            Offline => "offline",
            /// Taken out of service by an operator or a conflict resolution.
            Suspended => "suspended",
    }
);

impl AgentStatus {
    /// Online and accepting work, whatever its load.
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            AgentStatus::Idle | AgentStatus::Active | AgentStatus::Busy
        )
    }

    /// Expected to heartbeat: serving or draining.
    pub fn is_online(self) -> bool {
        self.is_serving() || self == AgentStatus::Draining
    }
}

named_enum!(
    /// A status an operator may set with `PATCH /agents/{id}`.
    StatusRequest, "agent status to set" {
        /// Back into service (from draining or suspended).
        Idle => "idle",
        Draining => "draining",
        Suspended => "suspended",
    }
);

/// A status an agent may report in its own heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatStatus {
    /// Online and accepting work; the platform derives idle, active or busy from the load.
    Serving,
    /// Finish current work, take no more.
    Draining,
}

// Not a `named_enum!`: three names (`idle`, `active`, `busy`) read as one variant, since the
// platform, not the agent, derives which of them applies.
impl FromStr for HeartbeatStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" | "active" | "busy" => Ok(Self::Serving),
            "draining" => Ok(Self::Draining),
            other => Err(format!(
                "cannot be reported as '{other}' (expected idle, active, busy or draining)"
            )),
        }
    }
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub name: String,
    pub capabilities: CapabilitySet,
    pub resources: ResourceMap,
    pub metadata: Metadata,
    pub max_concurrent_tasks: u32,
}

impl NewAgent {
    /// Checks every field and reports every problem at once.
    pub fn parse(
        name: &str,
        capabilities: &[String],
        resources: &Map<String, Value>,
        metadata: Map<String, Value>,
        max_concurrent_tasks: Option<u32>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.collect("name", check_name(name));
        let capabilities = merge(
            &mut errors,
            CapabilitySet::parse("capabilities", capabilities),
        );
        let resources = merge(&mut errors, ResourceMap::from_json("resources", resources));
        let metadata = errors.collect("metadata", Metadata::parse(metadata));
        let max = errors.collect(
            "max_concurrent_tasks",
            check_max_concurrent(max_concurrent_tasks.unwrap_or(DEFAULT_MAX_CONCURRENT_TASKS)),
        );
        match (name, capabilities, resources, metadata, max) {
            (Some(name), Some(capabilities), Some(resources), Some(metadata), Some(max))
                if errors.is_empty() =>
            {
                Ok(Self {
                    name,
                    capabilities,
                    resources,
                    metadata,
                    max_concurrent_tasks: max,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A validated partial update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPatch {
    pub capabilities: Option<CapabilitySet>,
    pub resources: Option<ResourceMap>,
    pub metadata: Option<Metadata>,
    pub max_concurrent_tasks: Option<u32>,
    pub status: Option<StatusRequest>,
}

impl AgentPatch {
    pub fn parse(
        capabilities: Option<&[String]>,
        resources: Option<&Map<String, Value>>,
        metadata: Option<Map<String, Value>>,
        max_concurrent_tasks: Option<u32>,
        status: Option<&str>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let patch = Self {
            capabilities: capabilities
                .and_then(|c| merge(&mut errors, CapabilitySet::parse("capabilities", c))),
            resources: resources
                .and_then(|r| merge(&mut errors, ResourceMap::from_json("resources", r))),
            metadata: metadata.and_then(|m| errors.collect("metadata", Metadata::parse(m))),
            max_concurrent_tasks: max_concurrent_tasks
                .and_then(|m| errors.collect("max_concurrent_tasks", check_max_concurrent(m))),
            status: status.and_then(|s| errors.collect("status", s.parse::<StatusRequest>())),
        };
        errors.into_result().map(|()| patch)
    }
}

fn merge<T>(errors: &mut ValidationErrors, result: Result<T, ValidationErrors>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(more) => {
            errors.0.extend(more.0);
            None
        }
    }
}

fn check_max_concurrent(value: u32) -> Result<u32, String> {
    if (1..=MAX_CONCURRENT_TASKS).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 1 and {MAX_CONCURRENT_TASKS}"))
    }
}

/// A transition the current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransitionError(pub String);

/// A status change, for the `agent_status_changed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub from: AgentStatus,
    pub to: AgentStatus,
}

/// What a patch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchOutcome {
    /// Names of the fields whose values changed.
    pub fields: Vec<&'static str>,
    pub status: Option<StatusChange>,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub capabilities: CapabilitySet,
    pub resources: ResourceMap,
    pub metadata: Metadata,
    pub status: AgentStatus,
    pub max_concurrent_tasks: u32,
    pub current_tasks: u32,
    pub reliability: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// Optimistic-concurrency token: a store writes an agent only over the version it was read at.
    pub version: i64,
}

impl Agent {
    /// A freshly registered agent. Registration counts as its first heartbeat.
    pub fn register(new: NewAgent, id: AgentId, now: DateTime<Utc>) -> Self {
        Self {
            id,
            name: new.name,
            capabilities: new.capabilities,
            resources: new.resources,
            metadata: new.metadata,
            status: AgentStatus::Idle,
            max_concurrent_tasks: new.max_concurrent_tasks,
            current_tasks: 0,
            reliability: INITIAL_RELIABILITY,
            created_at: now,
            updated_at: now,
            last_heartbeat: now,
            version: 0,
        }
    }

    /// The serving status that matches the current load.
    fn serving_status(&self) -> AgentStatus {
        if self.current_tasks == 0 {
            AgentStatus::Idle
        } else if self.current_tasks < self.max_concurrent_tasks {
            AgentStatus::Active
        } else {
            AgentStatus::Busy
        }
    }

    fn set_status(&mut self, to: AgentStatus) -> Option<StatusChange> {
        let from = self.status;
        (from != to).then(|| {
            self.status = to;
            StatusChange { from, to }
        })
    }

    /// Records a heartbeat.
    ///
    /// An offline agent comes back online. A suspended agent stays suspended: only an operator
    /// lifts a suspension. `metadata`, when given, is merged key by key into the stored metadata.
    pub fn heartbeat(
        &mut self,
        now: DateTime<Utc>,
        reported: Option<HeartbeatStatus>,
        metadata: Option<&Metadata>,
    ) -> Result<Option<StatusChange>, ValidationErrors> {
        if let Some(extra) = metadata {
            self.metadata = self
                .metadata
                .merged(extra)
                .map_err(|m| ValidationErrors::single("metadata", m))?;
        }
        self.last_heartbeat = now;
        self.updated_at = now;
        let target = match (self.status, reported) {
            (AgentStatus::Suspended, _) => AgentStatus::Suspended,
            (_, Some(HeartbeatStatus::Draining)) => AgentStatus::Draining,
            (_, Some(HeartbeatStatus::Serving)) => self.serving_status(),
            (AgentStatus::Draining, None) => AgentStatus::Draining,
            (_, None) => self.serving_status(),
        };
        Ok(self.set_status(target))
    }

    /// True when the agent should be online but its last heartbeat is older than `offline_after`.
    pub fn missed_heartbeats(&self, now: DateTime<Utc>, offline_after: Duration) -> bool {
        self.status.is_online() && now - self.last_heartbeat >= offline_after
    }

    /// Marks the agent offline if it missed its heartbeats; returns the change, if any.
    pub fn detect_offline(
        &mut self,
        now: DateTime<Utc>,
        offline_after: Duration,
    ) -> Option<StatusChange> {
        if !self.missed_heartbeats(now, offline_after) {
            return None;
        }
        self.updated_at = now;
        self.set_status(AgentStatus::Offline)
    }

    /// Counts one more task held. The caller has checked there is room.
    pub fn take_task(&mut self, now: DateTime<Utc>) -> Option<StatusChange> {
        self.current_tasks += 1;
        self.updated_at = now;
        self.refresh_load()
    }

    /// Counts one task fewer held, and folds its outcome into the reliability score
    /// (an exponential moving average of successes).
    pub fn release_task(
        &mut self,
        succeeded: Option<bool>,
        now: DateTime<Utc>,
    ) -> Option<StatusChange> {
        self.current_tasks = self.current_tasks.saturating_sub(1);
        if let Some(ok) = succeeded {
            let sample = if ok { 1.0 } else { 0.0 };
            self.reliability =
                RELIABILITY_DECAY * self.reliability + (1.0 - RELIABILITY_DECAY) * sample;
        }
        self.updated_at = now;
        self.refresh_load()
    }

    /// Moves a serving agent between idle, active and busy as its load changes.
    fn refresh_load(&mut self) -> Option<StatusChange> {
        if self.status.is_serving() {
            let target = self.serving_status();
            self.set_status(target)
        } else {
            None
        }
    }

    /// Applies an operator's update.
    pub fn apply(
        &mut self,
        patch: AgentPatch,
        now: DateTime<Utc>,
    ) -> Result<PatchOutcome, TransitionError> {
        let status = match patch.status {
            None => None,
            Some(StatusRequest::Suspended) => Some(AgentStatus::Suspended),
            Some(StatusRequest::Draining) if self.status.is_online() => Some(AgentStatus::Draining),
            Some(StatusRequest::Draining) => {
                return Err(TransitionError(format!(
                    "an agent that is {} cannot start draining",
                    self.status
                )))
            }
            Some(StatusRequest::Idle) if self.status == AgentStatus::Offline => {
                return Err(TransitionError(
                    "an offline agent comes back into service by sending a heartbeat".into(),
                ))
            }
            Some(StatusRequest::Idle) => None, // resolved below, once the new limits are known
        };
        let mut outcome = PatchOutcome::default();
        if let Some(c) = patch.capabilities.filter(|c| *c != self.capabilities) {
            self.capabilities = c;
            outcome.fields.push("capabilities");
        }
        if let Some(r) = patch
            .resources
            .filter(|r| !same_spelling(r, &self.resources))
        {
            self.resources = r;
            outcome.fields.push("resources");
        }
        if let Some(m) = patch.metadata.filter(|m| *m != self.metadata) {
            self.metadata = m;
            outcome.fields.push("metadata");
        }
        if let Some(m) = patch
            .max_concurrent_tasks
            .filter(|m| *m != self.max_concurrent_tasks)
        {
            self.max_concurrent_tasks = m;
            outcome.fields.push("max_concurrent_tasks");
        }
        let target = match (status, patch.status) {
            (Some(s), _) => Some(s),
            (None, Some(StatusRequest::Idle)) => Some(self.serving_status()),
            // A new concurrency limit can move a serving agent between active and busy.
            (None, None) if self.status.is_serving() => Some(self.serving_status()),
            (None, _) => None,
        };
        outcome.status = target.and_then(|t| self.set_status(t));
        if !outcome.fields.is_empty() || outcome.status.is_some() {
            self.updated_at = now;
        }
        Ok(outcome)
    }
}

/// Resource maps are equal by value; a patch that only respells a value still counts as a change,
/// because the API echoes the spelling back.
fn same_spelling(a: &ResourceMap, b: &ResourceMap) -> bool {
    a.to_json() == b.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(now: DateTime<Utc>) -> Agent {
        let new = NewAgent::parse(
            "worker",
            &["data_processing".into()],
            json!({"cpu": 2, "memory": "1Gi"}).as_object().unwrap(),
            Map::new(),
            Some(2),
        )
        .unwrap();
        Agent::register(new, AgentId(uuid::Uuid::from_u128(7)), now)
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn registration_reports_every_bad_field() {
        let err = NewAgent::parse(
            "",
            &["ok".into(), "not ok!".into()],
            json!({"cpu": "lots"}).as_object().unwrap(),
            Map::new(),
            Some(0),
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "capabilities[1]",
                "resources.cpu",
                "max_concurrent_tasks"
            ]
        );
    }

    #[test]
    fn silence_makes_an_agent_offline_and_a_heartbeat_brings_it_back() {
        let mut a = agent(t(0));
        let after = Duration::seconds(90);
        assert_eq!(a.detect_offline(t(89), after), None);
        let change = a.detect_offline(t(90), after).unwrap();
        assert_eq!(
            (change.from, change.to),
            (AgentStatus::Idle, AgentStatus::Offline)
        );
        assert_eq!(a.detect_offline(t(200), after), None, "already offline");
        let back = a.heartbeat(t(201), None, None).unwrap().unwrap();
        assert_eq!(back.to, AgentStatus::Idle);
        assert_eq!(a.last_heartbeat, t(201));
    }

    #[test]
    fn suspension_survives_heartbeats_and_is_lifted_by_an_operator() {
        let mut a = agent(t(0));
        let patch = AgentPatch {
            status: Some(StatusRequest::Suspended),
            ..AgentPatch::default()
        };
        a.apply(patch, t(1)).unwrap();
        assert_eq!(
            a.heartbeat(t(2), Some(HeartbeatStatus::Serving), None)
                .unwrap(),
            None
        );
        assert_eq!(a.status, AgentStatus::Suspended);
        assert_eq!(a.detect_offline(t(1000), Duration::seconds(90)), None);
        let lift = AgentPatch {
            status: Some(StatusRequest::Idle),
            ..AgentPatch::default()
        };
        assert_eq!(
            a.apply(lift, t(3)).unwrap().status.unwrap().to,
            AgentStatus::Idle
        );
    }

    #[test]
    fn draining_is_kept_until_the_agent_or_an_operator_ends_it() {
        let mut a = agent(t(0));
        a.heartbeat(t(1), Some(HeartbeatStatus::Draining), None)
            .unwrap();
        assert_eq!(a.status, AgentStatus::Draining);
        a.heartbeat(t(2), None, None).unwrap();
        assert_eq!(a.status, AgentStatus::Draining);
        a.heartbeat(t(3), Some(HeartbeatStatus::Serving), None)
            .unwrap();
        assert_eq!(a.status, AgentStatus::Idle);
    }

    #[test]
    fn an_offline_agent_cannot_be_patched_into_service_or_draining() {
        let mut a = agent(t(0));
        a.detect_offline(t(100), Duration::seconds(90));
        for status in [StatusRequest::Idle, StatusRequest::Draining] {
            let patch = AgentPatch {
                status: Some(status),
                ..AgentPatch::default()
            };
            assert!(a.apply(patch, t(101)).is_err());
        }
        assert_eq!(a.status, AgentStatus::Offline);
    }

    #[test]
    fn a_patch_reports_only_what_changed() {
        let mut a = agent(t(0));
        let patch = AgentPatch::parse(
            Some(&["data_processing".into()]),
            Some(json!({"cpu": 4}).as_object().unwrap()),
            None,
            None,
            None,
        )
        .unwrap();
        let outcome = a.apply(patch, t(5)).unwrap();
        assert_eq!(outcome.fields, ["resources"]);
        assert_eq!(outcome.status, None);
        assert_eq!(a.updated_at, t(5));
    }

    #[test]
    fn heartbeat_metadata_is_merged_and_stays_bounded() {
        let mut a = agent(t(0));
        let extra = Metadata::parse(json!({"load": 0.5}).as_object().unwrap().clone()).unwrap();
        a.heartbeat(t(1), None, Some(&extra)).unwrap();
        assert_eq!(a.metadata.as_map()["load"], json!(0.5));
        let huge = Metadata::parse(
            json!({"blob": "x".repeat(40 * 1024)})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        a.heartbeat(t(2), None, Some(&huge)).unwrap();
        let also_huge = Metadata::parse(
            json!({"blob2": "y".repeat(40 * 1024)})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert!(a.heartbeat(t(3), None, Some(&also_huge)).is_err());
    }
}
