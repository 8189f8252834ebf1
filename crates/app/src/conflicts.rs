//! Conflicts: reports, the platform's own detections, and resolution by strategy.
//!
//! A strategy is a pure domain function ([`domain::conflict::decide`]); this module gathers the
//! state it decides on, records the decision on the conflict, and then applies its effects
//! (requeueing, suspending, retrying) through the same use cases an operator would use. The
//! record comes first: if applying an effect fails, the decision is still on file and the
//! failure is logged, and each effect re-checks the state it acts on, so none acts twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use domain::conflict::{decide, Context, Decision, Detection, Effect, Resolution};
use domain::task::Outcome;
use domain::{
    AgentId, Conflict, ConflictId, ConflictReport, ConflictType, Cursor, Limit, Principal,
    Resource, Role, Severity, Strategy, Task, TaskId, TaskStatus, ValidationErrors,
};
use ports::{ConflictQuery, RepoError};
use serde_json::{json, Value};

use crate::{events, AppError, Platform};

/// Attempts at a conflict change that keeps losing races.
const MAX_ATTEMPTS: usize = 16;
/// Most detected conflicts one sweep re-examines.
const SWEEP_BATCH: u32 = 500;

/// One page of conflicts, and where the next starts.
#[derive(Debug, Clone)]
pub struct ConflictPage {
    pub conflicts: Vec<Conflict>,
    pub next: Option<Cursor>,
}

/// An operator's request to resolve.
#[derive(Debug, Clone, Default)]
pub struct ResolveRequest {
    /// The strategy; when absent, the configured default for the conflict's type, else
    /// `manual` if a resolution text is given.
    pub strategy: Option<Strategy>,
    /// The operator's words: required by `manual`, recorded with any strategy.
    pub resolution: Option<String>,
    /// What the operator says came of it; replaces the strategy's own summary.
    pub outcome: Option<String>,
}

fn repo(e: RepoError) -> AppError {
    AppError::from_repo("Conflict", e)
}

fn busy() -> AppError {
    AppError::Conflict("the conflict is being changed concurrently; try again".into())
}

impl Platform {
    /// Records a reported conflict. Operators report any; an agent reports only conflicts it
    /// is part of (its own `agent_id`, filled in when absent, and only a task it holds). The
    /// agent and task named must exist. With `auto_resolve_reported`, an operator's report is
    /// settled by its type's default strategy at once; an agent's never is, so no agent can
    /// make the platform act on others' work.
    pub async fn report_conflict(
        &self,
        actor: &Principal,
        mut report: ConflictReport,
    ) -> Result<Conflict, AppError> {
        if let Some(me) = actor.agent_id.filter(|_| actor.role == Role::Agent) {
            match report.agent_id {
                None => report.agent_id = Some(me),
                Some(other) if other != me => {
                    return Err(AppError::Forbidden(
                        "an agent may report only conflicts it is part of".into(),
                    ))
                }
                Some(_) => {}
            }
        } else if !actor.can_operate() {
            return Err(AppError::Forbidden(format!(
                "role {} may not report conflicts",
                actor.role
            )));
        }
        let mut errors = ValidationErrors::default();
        if let Some(agent) = report.agent_id {
            match self.deps.agents.get(agent).await {
                Ok(_) => {}
                Err(RepoError::NotFound) => errors.push("agent_id", "no agent has this ID"),
                Err(e) => return Err(AppError::from_repo("Agent", e)),
            }
        }
        let mut task_holder = None;
        if let Some(task) = report.task_id {
            match self.deps.tasks.get(task).await {
                Ok(task) => task_holder = task.assigned_agent,
                Err(RepoError::NotFound) => errors.push("task_id", "no task has this ID"),
                Err(e) => return Err(AppError::from_repo("Task", e)),
            }
        }
        errors.into_result()?;
        let by_agent = actor.role == Role::Agent;
        if by_agent && report.task_id.is_some() && task_holder != actor.agent_id {
            return Err(AppError::Forbidden(
                "an agent may report only about tasks it holds".into(),
            ));
        }
        let now = self.deps.clock.now();
        let mut conflict = Conflict::report(
            ConflictId(self.deps.ids.new_id()),
            report,
            &actor.subject,
            now,
        );
        if let Some(holder) = task_holder.filter(|h| !conflict.involved_agents.contains(h)) {
            conflict.involved_agents.push(holder);
        }
        // `metadata.resource_id` names a pool by ID or name, as claims do; an unknown one is
        // kept in the metadata as reported, and the conflict names no pool.
        let named = conflict
            .metadata
            .as_map()
            .get("resource_id")
            .and_then(Value::as_str);
        if let Some(reference) = named {
            conflict.resource_id = self
                .deps
                .resources
                .find_resource(reference)
                .await
                .map_err(|e| AppError::from_repo("Resource", e))?
                .map(|pool| pool.id);
        }
        let stored = self
            .deps
            .conflicts
            .insert_conflict(&conflict, vec![events::conflict_opened(&conflict)])
            .await
            .map_err(repo)?;
        self.publish(&stored).await;
        if self.settings.auto_resolve_reported && !by_agent {
            if let Some(strategy) = self.default_strategy(conflict.conflict_type) {
                // The report is stored: if the strategy cannot settle it, it stays open for
                // an operator, and the reporter still gets it back.
                match self
                    .settle(conflict.clone(), strategy, None, None, None)
                    .await
                {
                    Ok(settled) => return Ok(settled),
                    Err(e) => {
                        tracing::debug!(error = %e, "a reported conflict was left for an operator")
                    }
                }
            }
        }
        Ok(conflict)
    }

    /// Conflicts, newest first. An agent sees only those it is part of.
    pub async fn list_conflicts(
        &self,
        actor: &Principal,
        mut query: ConflictQuery,
        limit: Limit,
    ) -> Result<ConflictPage, AppError> {
        if actor.role == Role::Agent {
            let me = actor
                .agent_id
                .ok_or_else(|| AppError::Forbidden("no agent".into()))?;
            if query.agent.is_some_and(|a| a != me) {
                return Ok(ConflictPage {
                    conflicts: Vec::new(),
                    next: None,
                });
            }
            query.agent = Some(me);
        } else if !actor.can_read_all() {
            return Err(AppError::Forbidden(format!(
                "role {} may not read conflicts",
                actor.role
            )));
        }
        query.limit = limit.get() + 1;
        let rows = self
            .deps
            .conflicts
            .list_conflicts(&query)
            .await
            .map_err(repo)?;
        let (conflicts, next) = crate::page_of(rows, limit, |c| Cursor {
            created_at: c.created_at,
            id: c.id.as_uuid(),
        });
        Ok(ConflictPage { conflicts, next })
    }

    /// One conflict; to an agent that is not part of it, it does not exist.
    pub async fn get_conflict(
        &self,
        actor: &Principal,
        id: ConflictId,
    ) -> Result<Conflict, AppError> {
        let conflict = self.deps.conflicts.get_conflict(id).await.map_err(repo)?;
        let visible = actor.can_read_all()
            || (actor.role == Role::Agent && actor.agent_id.is_some_and(|a| conflict.involves(a)));
        if !visible {
            return Err(AppError::NotFound("Conflict"));
        }
        Ok(conflict)
    }

    /// An operator resolves an open conflict with a strategy.
    pub async fn resolve_conflict(
        &self,
        actor: &Principal,
        id: ConflictId,
        request: ResolveRequest,
    ) -> Result<Conflict, AppError> {
        require_operator(actor)?;
        let conflict = self.deps.conflicts.get_conflict(id).await.map_err(repo)?;
        let strategy = request
            .strategy
            .or_else(|| self.default_strategy(conflict.conflict_type))
            .or(request.resolution.as_ref().map(|_| Strategy::Manual))
            .ok_or_else(|| {
                ValidationErrors::single(
                    "strategy",
                    format!(
                        "no default strategy is configured for {}; name one",
                        conflict.conflict_type
                    ),
                )
            })?;
        self.settle(
            conflict,
            strategy,
            request.resolution.as_deref(),
            request.outcome,
            Some(actor),
        )
        .await
    }

    /// An operator dismisses an open conflict (not a real conflict, or nothing to do).
    pub async fn dismiss_conflict(
        &self,
        actor: &Principal,
        id: ConflictId,
        reason: String,
    ) -> Result<Conflict, AppError> {
        require_operator(actor)?;
        let reason = domain::conflict::check_text(&reason)
            .map_err(|e| ValidationErrors::single("reason", e))?;
        let dismissed = self
            .modify_conflict(id, |conflict, now| {
                conflict
                    .dismiss(reason.clone(), &actor.subject, now)
                    .map_err(|e| AppError::Conflict(e.to_string()))?;
                Ok(events::conflict_closed(conflict))
            })
            .await?;
        self.audit(
            &actor.subject,
            domain::AuditAction::ConflictDismissed,
            Some(id.to_string()),
            json!({"reason": reason}),
        )
        .await;
        Ok(dismissed)
    }

    /// The strategy configured for detected conflicts of this type, if any.
    fn default_strategy(&self, kind: ConflictType) -> Option<Strategy> {
        self.settings.conflict_strategies.get(&kind).copied()
    }

    /// Decides with `strategy`, records the resolution (and audits it), then applies its
    /// effects. `by` is the operator who asked, or `None` when the platform settles on its own.
    async fn settle(
        &self,
        conflict: Conflict,
        strategy: Strategy,
        text: Option<&str>,
        outcome: Option<String>,
        by: Option<&Principal>,
    ) -> Result<Conflict, AppError> {
        let decided_by = by.map_or(domain::PLATFORM_ACTOR, |p| p.subject.as_str());
        if !conflict.is_open() {
            return Err(AppError::Conflict(format!(
                "conflict is {}, not open",
                conflict.status
            )));
        }
        let decision = self
            .decide_on(&conflict, strategy, text, by.is_none())
            .await?;
        let mut details = decision.details.clone();
        if let Some(text) = text {
            details["resolution"] = json!(text);
        }
        let resolution = Resolution {
            strategy: Some(strategy),
            outcome: outcome.unwrap_or_else(|| decision.outcome.clone()),
            decided_by: decided_by.to_owned(),
            decided_at: self.deps.clock.now(),
            details,
        };
        let resolved = self
            .modify_conflict(conflict.id, |c, _| {
                c.resolve(resolution.clone())
                    .map_err(|e| AppError::Conflict(e.to_string()))?;
                Ok(events::conflict_closed(c))
            })
            .await?;
        self.audit(
            decided_by,
            domain::AuditAction::ConflictResolved,
            Some(resolved.id.to_string()),
            json!({
                "strategy": strategy.as_str(),
                "outcome": resolved.resolution.as_ref().map(|r| r.outcome.clone()),
                "effects": decision.effects.len(),
            }),
        )
        .await;
        self.apply(&resolved, &decision.effects).await;
        Ok(resolved)
    }

    /// Gathers what the strategy needs and lets it decide.
    async fn decide_on(
        &self,
        conflict: &Conflict,
        strategy: Strategy,
        text: Option<&str>,
        automatic: bool,
    ) -> Result<Decision, AppError> {
        let mut task_ids: Vec<TaskId> = conflict.involved_tasks.clone();
        task_ids.extend(conflict.task_id);
        let mut tasks = Vec::new();
        for id in task_ids.into_iter().collect::<BTreeSet<_>>() {
            match self.deps.tasks.get(id).await {
                Ok(t) => tasks.push(t),
                Err(RepoError::NotFound) => {}
                Err(e) => return Err(AppError::from_repo("Task", e)),
            }
        }
        let mut agent_ids: Vec<AgentId> = conflict.involved_agents.clone();
        agent_ids.extend(conflict.agent_id);
        let mut agents = Vec::new();
        for id in agent_ids.into_iter().collect::<BTreeSet<_>>() {
            match self.deps.agents.get(id).await {
                Ok(a) => agents.push(a),
                Err(RepoError::NotFound) => {}
                Err(e) => return Err(AppError::from_repo("Agent", e)),
            }
        }
        let (pool, holders) = match conflict.resource_id {
            Some(id) => match self.deps.resources.get_resource(id).await {
                Ok(pool) => (
                    Some(pool),
                    self.deps
                        .resources
                        .claim_holders()
                        .await
                        .map_err(|e| AppError::from_repo("Resource", e))?,
                ),
                Err(RepoError::NotFound) => (None, Vec::new()),
                Err(e) => return Err(AppError::from_repo("Resource", e)),
            },
            None => (None, Vec::new()),
        };
        let ctx = Context {
            tasks: &tasks,
            agents: &agents,
            pool: pool.as_ref(),
            holders: &holders,
            now: self.deps.clock.now(),
            policy: &self.settings.policy,
            automatic,
        };
        decide(conflict, strategy, text, &ctx)
            .map_err(|why| ValidationErrors::single("strategy", why).into())
    }

    /// Applies a resolution's effects. Each re-checks what it acts on; failures are logged,
    /// since the decision is on record already.
    async fn apply(&self, conflict: &Conflict, effects: &[Effect]) {
        for effect in effects {
            let result = match effect {
                Effect::Requeue {
                    task,
                    attempt,
                    preempt,
                    reason,
                } => {
                    let (attempt, preempt) = (*attempt, *preempt);
                    self.modify_task(*task, |t, _, now| {
                        if t.attempt != attempt || !t.status.is_active() {
                            return Ok(Outcome::Progress); // moved on meanwhile
                        }
                        let outcome = if preempt {
                            t.preempt(reason, now)
                        } else {
                            t.release(reason, now)
                        };
                        Ok(outcome.unwrap_or(Outcome::Progress))
                    })
                    .await
                    .map(|_| self.signals.work.notify_one())
                }
                Effect::SuspendAgent { agent, reason } => self.suspend(*agent, reason).await,
                Effect::Retry { task } => self
                    .modify_task(*task, |t, _, now| {
                        Ok(t.retry(now).unwrap_or(Outcome::Progress))
                    })
                    .await
                    .map(|_| self.signals.work.notify_one()),
            };
            if let Err(e) = result {
                tracing::warn!(conflict = %conflict.id, ?effect, error = %e, "a resolution's effect could not be applied");
            }
        }
    }

    /// Load, change, save with a version check, publish; retried on a lost race.
    async fn modify_conflict<F>(&self, id: ConflictId, mut change: F) -> Result<Conflict, AppError>
    where
        F: FnMut(&mut Conflict, DateTime<Utc>) -> Result<domain::NewEvent, AppError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let mut conflict = self.deps.conflicts.get_conflict(id).await.map_err(repo)?;
            let event = change(&mut conflict, self.deps.clock.now())?;
            match self
                .deps
                .conflicts
                .update_conflict(&conflict, vec![event])
                .await
            {
                Ok(stored) => {
                    self.publish(&stored).await;
                    conflict.version += 1;
                    return Ok(conflict);
                }
                Err(RepoError::Conflict(_)) => continue,
                Err(e) => return Err(repo(e)),
            }
        }
        Err(busy())
    }

    // ---- detection ---------------------------------------------------------------------

    /// Opens a detected conflict unless one for the same cause is open. With a default
    /// strategy for its type, the platform resolves it at once (contention excepted: it stays
    /// open while the contention lasts, see [`Platform::reconcile_contention`]).
    pub(crate) async fn detected(&self, found: Detection) -> Option<Conflict> {
        let conflict = Conflict::detect(
            ConflictId(self.deps.ids.new_id()),
            found,
            self.deps.clock.now(),
        );
        match self
            .deps
            .conflicts
            .insert_conflict(&conflict, vec![events::conflict_opened(&conflict)])
            .await
        {
            Ok(stored) => self.publish(&stored).await,
            Err(RepoError::Conflict(_)) => return None, // already open for this cause
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a detected conflict");
                return None;
            }
        }
        if conflict.conflict_type == ConflictType::ResourceContention {
            return Some(conflict);
        }
        if let Some(strategy) = self.default_strategy(conflict.conflict_type) {
            match self
                .settle(conflict.clone(), strategy, None, None, None)
                .await
            {
                Ok(resolved) => return Some(resolved),
                Err(e) => {
                    tracing::debug!(error = %e, "a detected conflict was left for an operator")
                }
            }
        }
        Some(conflict)
    }

    /// Brings the open contention conflicts in line with what the last scheduling pass saw:
    /// opens one per contended pool, refreshes who is involved (applying the default strategy
    /// again when that changed), and closes those whose contention ended.
    pub(crate) async fn reconcile_contention(&self, found: Vec<Detection>) -> Result<(), AppError> {
        if found.is_empty() && !self.contention_open.load(Ordering::Relaxed) {
            return Ok(());
        }
        let open = self
            .deps
            .conflicts
            .open_detected(&[ConflictType::ResourceContention], SWEEP_BATCH)
            .await
            .map_err(repo)?;
        self.contention_open
            .store(!found.is_empty(), Ordering::Relaxed);
        let strategy = self.default_strategy(ConflictType::ResourceContention);
        let mut current: BTreeMap<String, Detection> =
            found.into_iter().map(|d| (d.cause.clone(), d)).collect();
        for conflict in open {
            let cause = conflict.cause.clone().unwrap_or_default();
            match current.remove(&cause) {
                Some(detection) => {
                    // Written only when who is involved changed, and then acted on again.
                    if !conflict.clone().refresh(&detection, self.deps.clock.now()) {
                        continue;
                    }
                    let refreshed = self
                        .modify_conflict(conflict.id, |c, now| {
                            c.refresh(&detection, now);
                            Ok(events::conflict_updated(c))
                        })
                        .await;
                    match refreshed {
                        Ok(c) => self.act_on_contention(&c, strategy).await,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot refresh a contention conflict")
                        }
                    }
                }
                None => {
                    let ended = Resolution {
                        strategy,
                        outcome: "contention ended: every waiting task got its share".into(),
                        decided_by: domain::PLATFORM_ACTOR.into(),
                        decided_at: self.deps.clock.now(),
                        details: json!({"actions": conflict.metadata.as_map().get("actions").cloned().unwrap_or(Value::Array(Vec::new()))}),
                    };
                    let closed = self
                        .modify_conflict(conflict.id, |c, _| {
                            c.resolve(ended.clone())
                                .map_err(|e| AppError::Conflict(e.to_string()))?;
                            Ok(events::conflict_closed(c))
                        })
                        .await;
                    match closed {
                        Ok(c) => {
                            self.audit(
                                domain::PLATFORM_ACTOR,
                                domain::AuditAction::ConflictResolved,
                                Some(c.id.to_string()),
                                json!({"outcome": ended.outcome}),
                            )
                            .await
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot close a contention conflict"),
                    }
                }
            }
        }
        for (_, detection) in current {
            if let Some(opened) = self.detected(detection).await {
                self.contention_open.store(true, Ordering::Relaxed);
                self.act_on_contention(&opened, strategy).await;
            }
        }
        Ok(())
    }

    /// Applies the contention strategy while the conflict stays open (for `priority_based`:
    /// preempting lower-priority preemptible holders so the top waiter gets the pool next),
    /// and notes what it did on the conflict.
    async fn act_on_contention(&self, conflict: &Conflict, strategy: Option<Strategy>) {
        let Some(strategy) = strategy else { return };
        let decision = match self.decide_on(conflict, strategy, None, true).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(conflict = %conflict.id, error = %e, "no automatic action on contention");
                return;
            }
        };
        if decision.effects.is_empty() {
            return;
        }
        let noted = self
            .modify_conflict(conflict.id, |c, now| {
                let mut metadata = c.metadata.clone().into_map();
                let actions = metadata
                    .entry("actions")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = actions {
                    list.push(json!({"at": now, "strategy": strategy.as_str(), "outcome": decision.outcome}));
                    let excess = list.len().saturating_sub(20);
                    list.drain(..excess);
                }
                c.metadata = domain::Metadata::parse(metadata).unwrap_or_default();
                c.updated_at = now;
                Ok(events::conflict_updated(c))
            })
            .await;
        if let Err(e) = noted {
            tracing::debug!(error = %e, "cannot note an action on a contention conflict");
        }
        self.audit(
            domain::PLATFORM_ACTOR,
            domain::AuditAction::ConflictActed,
            Some(conflict.id.to_string()),
            json!({"strategy": strategy.as_str(), "outcome": decision.outcome}),
        )
        .await;
        self.apply(conflict, &decision.effects).await;
    }
}

impl Platform {
    /// Suspends an agent for a policy violation and sends its tasks back to the queue.
    async fn suspend(&self, agent: AgentId, reason: &str) -> Result<(), AppError> {
        let patch = domain::AgentPatch {
            status: Some(domain::StatusRequest::Suspended),
            ..domain::AgentPatch::default()
        };
        self.modify_agent(agent, |a, now| {
            let outcome = a
                .apply(patch.clone(), now)
                .map_err(|e| AppError::Conflict(e.0))?;
            Ok(outcome
                .status
                .map(|change| events::agent_status_changed(a, change, reason, now))
                .into_iter()
                .collect())
        })
        .await?;
        self.release_held(agent, reason, false).await?;
        Ok(())
    }

    /// A task's lease ran out: recorded, and settled by the default strategy
    /// (`retry_with_backoff` unless configured otherwise), which finds it queued again.
    pub(crate) async fn detect_lease_expired(
        &self,
        task: &Task,
        holder: Option<AgentId>,
        attempt: u32,
    ) {
        self.detected(Detection {
            conflict_type: ConflictType::LeaseExpired,
            severity: Severity::Medium,
            description: format!(
                "task {} lost its lease: attempt {attempt} sent no heartbeat within {} s",
                task.id, task.lease_seconds
            ),
            cause: format!("lease_expired:{}:{attempt}", task.id),
            agent_id: holder,
            task_id: Some(task.id),
            involved_agents: holder.into_iter().collect(),
            involved_tasks: vec![task.id],
            resource_id: None,
            metadata: json!({"attempt": attempt, "task_status": task.status.as_str()})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })
        .await;
    }

    /// A pending task's deadline passed.
    pub(crate) async fn detect_deadline_missed(&self, task: &Task) {
        self.detected(Detection {
            conflict_type: ConflictType::DeadlineMissed,
            severity: Severity::High,
            description: format!(
                "task {} expired: its deadline passed before any agent could run it{}",
                task.id,
                task.pending_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            cause: format!("deadline_missed:{}", task.id),
            agent_id: None,
            task_id: Some(task.id),
            involved_agents: Vec::new(),
            involved_tasks: vec![task.id],
            resource_id: None,
            metadata: json!({"deadline": task.deadline})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })
        .await;
    }

    /// An agent reported on an attempt that is no longer the task's current one.
    pub(crate) async fn detect_stale_report(&self, agent: AgentId, task: TaskId, attempt: u32) {
        self.detected(Detection {
            conflict_type: ConflictType::StateInconsistency,
            severity: Severity::Low,
            description: format!(
                "agent {agent} reported on attempt {attempt} of task {task}, which is no longer current"
            ),
            cause: format!("stale_attempt:{task}:{attempt}"),
            agent_id: Some(agent),
            task_id: Some(task),
            involved_agents: vec![agent],
            involved_tasks: vec![task],
            resource_id: None,
            metadata: json!({"attempt": attempt, "stale_report": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })
        .await;
    }

    /// The periodic part of detection: tasks no registered agent could ever run open
    /// `capability_gap` conflicts, and detected conflicts whose cause went away close.
    pub async fn sweep_conflicts(&self) -> Result<(), AppError> {
        // Another replica may have opened contention conflicts: look at them in the next pass.
        self.contention_open.store(true, Ordering::Relaxed);
        let waiting = self
            .deps
            .tasks
            .waiting_for_capabilities(SWEEP_BATCH)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        let mut covered: BTreeMap<Vec<String>, bool> = BTreeMap::new();
        for task in waiting {
            let key = task.required_capabilities.to_strings();
            let capable = match covered.get(&key) {
                Some(c) => *c,
                None => {
                    let c = self
                        .deps
                        .agents
                        .capable_exists(&task.required_capabilities)
                        .await
                        .map_err(|e| AppError::from_repo("Agent", e))?;
                    covered.insert(key.clone(), c);
                    c
                }
            };
            if !capable {
                self.detected(Detection {
                    conflict_type: ConflictType::CapabilityGap,
                    severity: Severity::High,
                    description: format!(
                        "no registered agent has every capability task {} requires ({})",
                        task.id,
                        key.join(", ")
                    ),
                    cause: format!("capability_gap:{}", task.id),
                    agent_id: None,
                    task_id: Some(task.id),
                    involved_agents: Vec::new(),
                    involved_tasks: vec![task.id],
                    resource_id: None,
                    metadata: json!({"required_capabilities": key})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                })
                .await;
            }
        }
        let open = self
            .deps
            .conflicts
            .open_detected(
                &[
                    ConflictType::CapabilityGap,
                    ConflictType::StateInconsistency,
                    ConflictType::DeadlineMissed,
                ],
                SWEEP_BATCH,
            )
            .await
            .map_err(repo)?;
        for conflict in open {
            if let Some(why) = self.cause_gone(&conflict).await? {
                let gone = Resolution {
                    strategy: None,
                    outcome: why,
                    decided_by: domain::PLATFORM_ACTOR.into(),
                    decided_at: self.deps.clock.now(),
                    details: json!({"cause_gone": true}),
                };
                let closed = self
                    .modify_conflict(conflict.id, |c, _| {
                        c.resolve(gone.clone())
                            .map_err(|e| AppError::Conflict(e.to_string()))?;
                        Ok(events::conflict_closed(c))
                    })
                    .await;
                match closed {
                    Ok(c) => {
                        self.audit(
                            domain::PLATFORM_ACTOR,
                            domain::AuditAction::ConflictResolved,
                            Some(c.id.to_string()),
                            json!({"outcome": gone.outcome}),
                        )
                        .await
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot close a detected conflict"),
                }
            }
        }
        Ok(())
    }

    /// Why a detected conflict's cause is gone, if it is.
    async fn cause_gone(&self, conflict: &Conflict) -> Result<Option<String>, AppError> {
        let Some(id) = conflict.task_id else {
            return Ok(None);
        };
        let task = match self.deps.tasks.get(id).await {
            Ok(t) => t,
            Err(RepoError::NotFound) => return Ok(Some(format!("task {id} no longer exists"))),
            Err(e) => return Err(AppError::from_repo("Task", e)),
        };
        Ok(match conflict.conflict_type {
            ConflictType::CapabilityGap if task.status != TaskStatus::Pending => {
                Some(format!("task {id} is {} now", task.status))
            }
            ConflictType::CapabilityGap => self
                .deps
                .agents
                .capable_exists(&task.required_capabilities)
                .await
                .map_err(|e| AppError::from_repo("Agent", e))?
                .then(|| "an agent with the required capabilities is registered".to_owned()),
            ConflictType::StateInconsistency if task.status.is_terminal() => {
                Some(format!("task {id} has finished ({})", task.status))
            }
            ConflictType::DeadlineMissed if task.status != TaskStatus::Expired => {
                Some(format!("task {id} is {} now", task.status))
            }
            _ => None,
        })
    }
}

/// What one scheduling pass saw of contention: for each pool with tasks waiting for its
/// capacity while others hold it, the detection to reconcile.
pub(crate) fn contention(
    waiting: &[(TaskId, String)],
    pools: &[Resource],
    holders: &[Task],
) -> Vec<Detection> {
    let mut by_pool: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
    for (task, pool) in waiting {
        by_pool.entry(pool.as_str()).or_default().push(*task);
    }
    let mut found = Vec::new();
    for (pool_id, waiters) in by_pool {
        let Some(pool) = pools.iter().find(|p| p.id.to_string() == pool_id) else {
            continue;
        };
        let held = domain::resource::allocations(pool, holders);
        if held.is_empty() {
            continue;
        }
        let mut agents: Vec<AgentId> = Vec::new();
        for a in held.iter().filter_map(|a| a.agent) {
            if !agents.contains(&a) {
                agents.push(a);
            }
        }
        let holding: Vec<TaskId> = held.iter().map(|a| a.task).collect();
        let mut tasks = waiters.clone();
        tasks.extend(holding.iter().copied());
        found.push(Detection {
            conflict_type: ConflictType::ResourceContention,
            severity: Severity::Medium,
            description: format!(
                "{} task(s) wait for resource {} while {} task(s) hold it",
                waiters.len(),
                pool.name,
                holding.len()
            ),
            cause: format!("resource_contention:{}", pool.id),
            agent_id: None,
            task_id: waiters.first().copied(),
            involved_agents: agents,
            involved_tasks: tasks,
            resource_id: Some(pool.id),
            metadata: json!({"resource": pool.name, "waiting": waiters, "holding": holding})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        });
    }
    found
}

fn require_operator(actor: &Principal) -> Result<(), AppError> {
    if actor.can_operate() {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "role {} may not resolve or dismiss conflicts",
            actor.role
        )))
    }
}
