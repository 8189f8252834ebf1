//! Settlement: a strategy decides (a pure domain function), the decision is recorded on the
//! conflict and audited, and then its effects (requeueing, suspending, retrying) are applied
//! through the same use cases an operator would use. The record comes first: if applying an
//! effect fails, the decision is still on file and the failure is logged, and each effect
//! re-checks the state it acts on, so none acts twice.

use domain::conflict::{decide, Context, Decision, Effect, Resolution};
use domain::task::Outcome;
use std::collections::BTreeSet;

use domain::{AgentId, Conflict, ConflictType, Principal, Strategy, TaskId, ValidationErrors};
use ports::RepoError;
use serde_json::json;

use crate::{events, AppError, Platform};

impl Platform {
    /// The strategy configured for detected conflicts of this type, if any.
    pub(super) fn default_strategy(&self, kind: ConflictType) -> Option<Strategy> {
        self.settings.conflict_strategies.get(&kind).copied()
    }

    /// Decides with `strategy`, records the resolution (and audits it), then applies its
    /// effects. `by` is the operator who asked, or `None` when the platform settles on its own.
    pub(super) async fn settle(
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
    pub(super) async fn decide_on(
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
    pub(super) async fn apply(&self, conflict: &Conflict, effects: &[Effect]) {
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
                    .map(|_| self.wake_for_room())
                }
                Effect::SuspendAgent { agent, reason } => self.suspend(*agent, reason).await,
                Effect::Retry { task } => self
                    .modify_task(*task, |t, _, now| {
                        Ok(t.retry(now).unwrap_or(Outcome::Progress))
                    })
                    .await
                    .map(|_| self.wake_for_room()),
            };
            if let Err(e) = result {
                tracing::warn!(conflict = %conflict.id, ?effect, error = %e, "a resolution's effect could not be applied");
            }
        }
    }

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
}
