//! Conflicts: reports, the platform's own detections, and resolution by strategy.
//!
//! - this module: the use cases (report, list, read, resolve, dismiss) and the one way a
//!   conflict is changed ([`Platform::modify_conflict`]);
//! - [`settle`]: deciding with a strategy, recording the decision, applying its effects;
//! - [`detect`]: opening what the platform detects, keeping contention current, and closing
//!   detected conflicts whose cause is gone.
//!
//! Strategies and detection rules are pure domain functions (`domain::conflict`); this module
//! gathers what they decide on and stores what they return.

mod detect;
mod settle;

use chrono::{DateTime, Utc};
use domain::{
    Conflict, ConflictId, ConflictReport, Cursor, Limit, Principal, Role, Strategy,
    ValidationErrors,
};
use ports::{ConflictQuery, RepoError};
use serde_json::{json, Value};

use crate::{events, require, Access, AppError, Attempt, Platform};

/// Most detected conflicts one sweep re-examines.
const SWEEP_BATCH: u32 = 500;

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
    ) -> Result<crate::Page<Conflict>, AppError> {
        if actor.role == Role::Agent {
            let me = actor
                .agent_id
                .ok_or_else(|| AppError::Forbidden("no agent".into()))?;
            if query.agent.is_some_and(|a| a != me) {
                return Ok(crate::Page {
                    items: Vec::new(),
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
        Ok(crate::Page::of(rows, limit, |c| Cursor {
            created_at: c.created_at,
            id: c.id.as_uuid(),
        }))
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
        require(actor, Access::Change, "conflicts")?;
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
        require(actor, Access::Change, "conflicts")?;
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

    /// Load, change, save with a version check, publish; retried on a lost race.
    async fn modify_conflict<F>(&self, id: ConflictId, change: F) -> Result<Conflict, AppError>
    where
        F: Fn(&mut Conflict, DateTime<Utc>) -> Result<domain::NewEvent, AppError>,
    {
        crate::until_won("conflict", || async {
            let mut conflict = self.deps.conflicts.get_conflict(id).await.map_err(repo)?;
            let event = change(&mut conflict, self.deps.clock.now())?;
            let written = self
                .deps
                .conflicts
                .update_conflict(&conflict, vec![event])
                .await;
            let Attempt::Won(stored) = Attempt::of(written).map_err(repo)? else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            conflict.version += 1;
            Ok(Attempt::Won(conflict))
        })
        .await
    }
}
