//! The platform's own detections: each rule is a pure domain function
//! (`domain::conflict::detection`); here they are fed what the platform saw, and what they
//! find is opened, kept current, settled by the type's default strategy, or closed when its
//! cause is gone.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use domain::conflict::{self as detection, Cause, Detection, Resolution};
use domain::{AgentId, Conflict, ConflictId, ConflictType, Strategy, Task, TaskId};
use ports::RepoError;
use serde_json::{json, Value};

use super::{repo, SWEEP_BATCH};
use crate::{events, AppError, Platform};

/// The most recent actions a contention conflict lists.
const MAX_ACTIONS_KEPT: usize = 20;

impl Platform {
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
        let mut current: BTreeMap<Cause, Detection> =
            found.into_iter().map(|d| (d.cause.clone(), d)).collect();
        for conflict in open {
            match conflict.cause.as_ref().and_then(|c| current.remove(c)) {
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
                    let actions = conflict.metadata.as_map().get("actions").cloned();
                    self.close_detected(
                        conflict.id,
                        strategy,
                        "contention ended: every waiting task got its share".into(),
                        json!({"actions": actions.unwrap_or(Value::Array(Vec::new()))}),
                    )
                    .await;
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
                let mut dropped = 0;
                if let Value::Array(list) = actions {
                    list.push(json!({"at": now, "strategy": strategy.as_str(), "outcome": decision.outcome}));
                    dropped = list.len().saturating_sub(MAX_ACTIONS_KEPT);
                    list.drain(..dropped);
                }
                if dropped > 0 {
                    // The oldest go; how many went is kept.
                    let earlier = metadata
                        .get("actions_not_listed")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    metadata.insert(
                        "actions_not_listed".into(),
                        (earlier + dropped as u64).into(),
                    );
                }
                c.metadata = domain::Metadata::bounded(metadata);
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

    /// A task's lease ran out: recorded, and settled by the default strategy
    /// (`retry_with_backoff` unless configured otherwise), which finds it queued again.
    pub(crate) async fn detect_lease_expired(
        &self,
        task: &Task,
        holder: Option<AgentId>,
        attempt: u32,
    ) {
        self.detected(detection::lease_expired(task, holder, attempt))
            .await;
    }

    /// A pending task's deadline passed.
    pub(crate) async fn detect_deadline_missed(&self, task: &Task) {
        self.detected(detection::deadline_missed(task)).await;
    }

    /// An agent reported on an attempt that is no longer the task's current one.
    pub(crate) async fn detect_stale_report(&self, agent: AgentId, task: TaskId, attempt: u32) {
        self.detected(detection::stale_report(agent, task, attempt))
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
                self.detected(detection::capability_gap(&task)).await;
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
                self.close_detected(conflict.id, None, why, json!({"cause_gone": true}))
                    .await;
            }
        }
        Ok(())
    }

    /// Resolves a detected conflict whose cause went away, as the platform, and audits it. A
    /// conflict that moved on meanwhile (an operator settled it) is left as it is.
    async fn close_detected(
        &self,
        id: ConflictId,
        strategy: Option<Strategy>,
        outcome: String,
        details: Value,
    ) {
        let closing = Resolution {
            strategy,
            outcome,
            decided_by: domain::PLATFORM_ACTOR.into(),
            decided_at: self.deps.clock.now(),
            details,
        };
        let closed = self
            .modify_conflict(id, |c, _| {
                c.resolve(closing.clone())
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
                    json!({"outcome": closing.outcome}),
                )
                .await
            }
            Err(e) => tracing::debug!(error = %e, "cannot close a detected conflict"),
        }
    }

    /// Why a detected conflict's cause is gone, if it is: the domain's rule, fed the task as it
    /// is now and, for a capability gap, whether an agent could run it.
    async fn cause_gone(&self, conflict: &Conflict) -> Result<Option<String>, AppError> {
        let Some(id) = conflict.task_id else {
            return Ok(None);
        };
        let task = match self.deps.tasks.get(id).await {
            Ok(t) => Some(t),
            Err(RepoError::NotFound) => None,
            Err(e) => return Err(AppError::from_repo("Task", e)),
        };
        let capable = match &task {
            Some(t) if detection::needs_capability_check(conflict, Some(t)) => self
                .deps
                .agents
                .capable_exists(&t.required_capabilities)
                .await
                .map_err(|e| AppError::from_repo("Agent", e))?,
            _ => false,
        };
        Ok(detection::cause_gone(conflict, task.as_ref(), capable))
    }
}
