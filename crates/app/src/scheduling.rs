//! The scheduling pass and the sweeps that keep leases and deadlines honest.
//!
//! The pass itself is the domain's pure [`schedule`] function applied to a snapshot the store
//! hands over under its scheduling lock; this module turns the plan into task and agent changes
//! and their events.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use domain::conflict::Detection;
use domain::scheduler::{schedule, AgentCapacity, Policy, Pools};
use domain::task::Outcome;
use domain::{AgentId, EventKind, TaskId};
use ports::{Changes, PassSize, SchedulingSnapshot};

use crate::{events, AppError, Platform};

/// Most tasks one sweep pass looks at.
const SWEEP_BATCH: u32 = 500;

/// What a pass found besides its changes: the pools contended in it, whether it left a
/// serving agent a free slot, and whether it read as many pending tasks as it asked for.
#[derive(Debug, Default)]
struct Findings {
    contended: Vec<Detection>,
    room_left: bool,
    /// A free slot of an agent the pass saw was left empty: the tasks read fit none of them.
    slot_unfilled: bool,
    read_all_asked: bool,
    /// Serving agents were left out (another write held them).
    left_out: bool,
    /// The pass read the head of the queue unranked (it counted no free slot): what it saw of
    /// pools waited for is not the head of the queue by rank, so contention is not judged on it.
    unranked: bool,
    /// The pass read the head of the queue unranked, yet found a free slot (one freed after the
    /// slots were counted): it placed nothing, and a ranked pass should follow.
    rank_again: bool,
}

/// Turns a snapshot into the changes of one pass, and notes what it found.
fn decide(
    snapshot: SchedulingSnapshot,
    now: DateTime<Utc>,
    policy: &Policy,
    findings: &Mutex<Findings>,
) -> Changes {
    let capacity = AgentCapacity::of_all(&snapshot.agents, &snapshot.held);
    let free_slots = ports::PassSize::free_slots(&capacity);
    {
        let mut found = findings.lock().unwrap_or_else(|p| p.into_inner());
        found.unranked = snapshot.unranked;
        if snapshot.unranked && free_slots > 0 {
            // The batch was not chosen by rank, so placing it could pass over a task that
            // ranks higher: nothing is written, and the next pass ranks.
            found.rank_again = true;
            found.room_left = true;
            return Changes::default();
        }
    }
    let read_all_asked = snapshot.pending.len() >= snapshot.asked as usize;
    // With agents left out, the fleet seen is not the whole fleet: it is not taken for full,
    // and no task is told it waits for want of an agent that may be among those left out.
    let left_out = snapshot.left_out > 0;
    let pools = Pools::of(&snapshot.resources, &snapshot.claim_holders);
    let plan = schedule(&snapshot.pending, capacity, pools, now, policy);
    let slot_unfilled = free_slots > plan.assignments.len();
    let room_left = slot_unfilled || left_out;
    let waiting: Vec<(TaskId, domain::ResourceId)> = plan
        .unplaced
        .iter()
        .filter_map(|u| u.waits_on.map(|pool| (u.task, pool)))
        .collect();

    let mut tasks: HashMap<TaskId, domain::Task> =
        snapshot.pending.into_iter().map(|t| (t.id, t)).collect();
    let mut agents: HashMap<AgentId, domain::Agent> =
        snapshot.agents.into_iter().map(|a| (a.id, a)).collect();
    let mut changes = Changes::default();
    let mut touched_agents = Vec::new();
    for assignment in plan.assignments {
        let (Some(mut task), Some(agent)) = (
            tasks.remove(&assignment.task),
            agents.get_mut(&assignment.agent),
        ) else {
            continue;
        };
        if task.assign(agent.id, now).is_err() {
            continue;
        }
        changes
            .events
            .push(events::task_transition(&task, Outcome::Assigned, None, now));
        for claim in &task.resource_claims {
            let pool = snapshot
                .resources
                .iter()
                .find(|p| p.is_named(&claim.resource));
            if let Some(pool) = pool {
                if !changes.allocated_from.iter().any(|p| p.id == pool.id) {
                    changes.allocated_from.push(pool.clone());
                }
            }
            changes.events.push(events::resource_claim(
                EventKind::ResourceAllocated,
                pool,
                claim,
                &task,
                Some(agent.id),
                now,
            ));
        }
        if let Some(change) = agent.take_task(now) {
            changes.events.push(events::agent_status_changed(
                agent,
                change,
                "task assigned",
                now,
            ));
        }
        if !touched_agents.contains(&agent.id) {
            touched_agents.push(agent.id);
        }
        changes.tasks.push(task);
    }
    for waiting in plan.unplaced.into_iter().filter(|_| !left_out) {
        if let Some(mut task) = tasks.remove(&waiting.task) {
            if task.pending_reason.as_ref() != Some(&waiting.reason) {
                task.pending_reason = Some(waiting.reason);
                task.updated_at = now;
                changes.tasks.push(task);
            }
        }
    }
    changes.agents = touched_agents
        .into_iter()
        .filter_map(|id| agents.remove(&id))
        .collect();
    if !waiting.is_empty() {
        // Holders after this pass: those before it and those it just assigned.
        let mut holders = snapshot.claim_holders;
        holders.extend(
            changes
                .tasks
                .iter()
                .filter(|t| t.status.is_active() && !t.resource_claims.is_empty())
                .cloned(),
        );
        findings.lock().unwrap_or_else(|p| p.into_inner()).contended =
            domain::conflict::contention(&waiting, &snapshot.resources, &holders);
    }
    let mut found = findings.lock().unwrap_or_else(|p| p.into_inner());
    found.room_left = room_left;
    found.slot_unfilled = slot_unfilled;
    found.read_all_asked = read_all_asked;
    found.left_out = left_out;
    changes
}

impl Platform {
    /// One scheduling pass. Returns how many tasks were assigned.
    pub async fn run_scheduler(&self) -> Result<usize, AppError> {
        let started = std::time::Instant::now();
        let now = self.deps.clock.now();
        let policy = self.settings.policy.clone();
        let findings = Arc::new(Mutex::new(Findings::default()));
        let found = findings.clone();
        let epoch = self.signals.room.epoch();
        let released = self.signals.left_out.epoch();
        let size = if self.signals.wide.swap(false, Ordering::SeqCst) {
            PassSize::at_most(self.settings.schedule_batch)
        } else {
            PassSize::fitted(self.settings.schedule_batch)
        };
        let stored = self
            .deps
            .tasks
            .schedule(
                now,
                size,
                &self.settings.policy,
                Box::new(move |snapshot| decide(snapshot, now, &policy, &found)),
            )
            .await;
        // Passes that fail are timed too: slow ones are what the histogram is for.
        self.metrics.scheduler_pass.observe(started.elapsed());
        let stored = stored.map_err(|e| AppError::from_repo("Task", e))?;
        let assigned = stored
            .iter()
            .filter(|e| e.kind == EventKind::TaskAssigned)
            .count();
        self.publish(&stored).await;
        let findings = std::mem::take(&mut *findings.lock().unwrap_or_else(|p| p.into_inner()));
        self.signals.room.settle(epoch, !findings.room_left);
        // The agents left out are being written: the write that holds them asks for the next
        // pass once it is done (see `Platform::agents_released`), or has already.
        if findings.left_out && !self.signals.left_out.settle(released, true) {
            self.signals.work.notify_one();
        }
        if findings.rank_again {
            self.signals.work.notify_one();
        } else if findings.slot_unfilled && findings.read_all_asked && size.is_fitted() {
            // The tasks read fit no free agent, but some further down the queue may: the next
            // pass reads the whole batch. (Agents left out are not a reason to: the tasks read
            // were not tried on them.)
            self.signals.wide.store(true, Ordering::SeqCst);
            self.signals.work.notify_one();
        } else if assigned > 0
            && findings.room_left
            && (findings.read_all_asked || findings.left_out)
        {
            // More tasks may be ready than one pass takes, or fit agents the pass left out:
            // pass again while passes place some. A pass that saw every serving agent and read
            // fewer tasks than it asked for read every ready task it could lock; another would
            // find only those it left, which fit nowhere. (A pending task another write held
            // was skipped: the next pass for any reason, at the latest the periodic one, reads
            // it.)
            self.signals.work.notify_one();
        }
        if !findings.unranked {
            let contended = findings.contended;
            if let Err(e) = self.reconcile_contention(contended).await {
                tracing::warn!(error = %e, "cannot reconcile resource contention conflicts");
            }
        }
        Ok(assigned)
    }

    /// Ends every attempt whose lease ran out. Returns how many.
    pub async fn expire_leases(&self) -> Result<usize, AppError> {
        let now = self.deps.clock.now();
        let expired = self
            .deps
            .tasks
            .lease_expired(now, SWEEP_BATCH)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        let mut count = 0;
        for task in expired {
            // Set only when this call ended the attempt (not another replica, not a late
            // completion that got there first).
            let mut ended = None;
            let result = self
                .modify_task(task.id, |task, _, now| {
                    ended = None;
                    if !task.lease_expired(now) {
                        return Ok(Outcome::Progress); // renewed meanwhile
                    }
                    let holder = (task.assigned_agent, task.attempt);
                    let outcome = task
                        .release("lease expired", now)
                        .ok_or_else(|| AppError::Conflict("task no longer held".into()))?;
                    ended = Some(holder);
                    Ok(outcome)
                })
                .await;
            match (result, ended) {
                (Ok(t), Some((holder, attempt))) => {
                    count += 1;
                    self.metrics.lease_expiries.inc();
                    self.detect_lease_expired(&t, holder, attempt).await;
                }
                (Ok(_), None) | (Err(AppError::Conflict(_) | AppError::NotFound(_)), _) => {}
                (Err(e), _) => return Err(e),
            }
        }
        Ok(count)
    }

    /// Expires every pending task past its deadline. Returns how many.
    pub async fn expire_deadlines(&self) -> Result<usize, AppError> {
        let now = self.deps.clock.now();
        let late = self
            .deps
            .tasks
            .past_deadline(now, SWEEP_BATCH)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        let mut count = 0;
        for task in late {
            // Set only when this call expired it, not another replica.
            let mut expired = false;
            let result = self
                .modify_task(task.id, |task, _, now| {
                    let outcome = task.expire_if_late(now);
                    expired = outcome.is_some();
                    Ok(outcome.unwrap_or(Outcome::Progress))
                })
                .await;
            match result {
                Ok(t) if expired => {
                    count += 1;
                    self.detect_deadline_missed(&t).await;
                }
                Ok(_) | Err(AppError::NotFound(_) | AppError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
    use domain::Role;
    use ports::PassSize;
    use testkit::builders::{agent_principal, new_agent, new_task, principal};

    use crate::{Dependencies, Platform, Settings};

    /// A platform on a fresh embedded store.
    fn platform() -> Platform {
        Platform::new(
            Dependencies::on_store(
                Arc::new(MemoryStore::new()),
                Arc::new(MemoryBus::new()),
                Arc::new(SystemClock),
                Arc::new(RandomIds),
            ),
            Settings::default(),
        )
    }

    /// Whether the scheduler has been woken since it last looked (taking the wake-up).
    async fn woken(platform: &Platform) -> bool {
        tokio::time::timeout(Duration::ZERO, platform.work_arrived())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_pass_that_placed_every_ready_task_does_not_ask_for_another() {
        let platform = platform();
        let operator = principal(Role::Operator);
        let mut worker = new_agent("worker", &[]);
        worker.max_concurrent_tasks = 50;
        platform.register_agent(&operator, worker).await.unwrap();
        // Two tasks, each placed, leaving the agent room.
        for _ in 0..2 {
            let new = new_task("work", 5, &[], chrono::Utc::now());
            platform.submit_task(&operator, new, None).await.unwrap();
        }
        woken(&platform).await;
        assert_eq!(platform.run_scheduler().await.unwrap(), 2);
        assert!(
            !woken(&platform).await,
            "the pass read fewer tasks than it asked for, so it read every ready one"
        );
    }

    #[tokio::test]
    async fn new_tasks_wake_the_scheduler_only_while_an_agent_has_room() {
        let platform = platform();
        let operator = principal(Role::Operator);
        let submit = || async {
            let new = new_task("work", 5, &[], chrono::Utc::now());
            platform.submit_task(&operator, new, None).await.unwrap()
        };
        assert_eq!(platform.run_scheduler().await.unwrap(), 0);
        woken(&platform).await;
        submit().await;
        assert!(
            !woken(&platform).await,
            "no agent serves: a pass could place nothing"
        );

        let agent = platform
            .register_agent(&operator, new_agent("worker", &[]))
            .await
            .unwrap()
            .agent;
        assert!(woken(&platform).await, "a new agent brings room");
        submit().await;
        assert!(woken(&platform).await, "the agent has room for new tasks");
        assert_eq!(platform.run_scheduler().await.unwrap(), 2);
        assert!(
            !woken(&platform).await,
            "both slots were filled: no pass again"
        );
        let third = submit().await;
        assert!(
            !woken(&platform).await,
            "the only agent is full: a new task waits for room or the periodic pass"
        );

        let held = platform.held_tasks(agent.id).await.unwrap();
        let me = agent_principal(agent.id);
        platform
            .complete_task(&me, held[0].id, held[0].attempt, Default::default())
            .await
            .unwrap();
        assert!(woken(&platform).await, "a finished task frees a slot");
        assert_eq!(platform.run_scheduler().await.unwrap(), 1);
        assert_eq!(
            platform.held_tasks(agent.id).await.unwrap().len(),
            2,
            "the waiting task took the freed slot"
        );
        assert!(platform
            .held_tasks(agent.id)
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == third.id));
    }

    #[tokio::test]
    async fn a_write_of_agents_a_pass_left_out_wakes_the_next_pass() {
        let platform = platform();
        let operator = principal(Role::Operator);
        let agent = platform
            .register_agent(&operator, new_agent("worker", &[]))
            .await
            .unwrap()
            .agent;
        let new = new_task("work", 5, &[], chrono::Utc::now());
        platform.submit_task(&operator, new, None).await.unwrap();
        assert_eq!(platform.run_scheduler().await.unwrap(), 1);
        let held = platform.held_tasks(agent.id).await.unwrap();
        let me = agent_principal(agent.id);
        platform
            .start_task(&me, held[0].id, held[0].attempt)
            .await
            .unwrap();
        // As a pass that found the agent held by another write leaves it (or a pass that did
        // not: the next write finds nothing to ask for).
        let pass = |left_out: bool| {
            let signal = &platform.signals.left_out;
            if left_out {
                assert!(
                    signal.settle(signal.epoch(), true),
                    "no write ended meanwhile"
                );
            }
        };
        for left_out in [false, true] {
            woken(&platform).await; // whatever woke it before
            pass(left_out);
            platform
                .task_heartbeat(&me, held[0].id, held[0].attempt, Some(0.5), None)
                .await
                .unwrap();
            assert_eq!(
                woken(&platform).await,
                left_out,
                "a report group that wrote agents wakes a pass only when one left agents out"
            );

            pass(left_out);
            platform.signals.beats.record(agent.id, chrono::Utc::now());
            assert_eq!(platform.flush_heartbeats().await.unwrap(), 1);
            assert_eq!(
                woken(&platform).await,
                left_out,
                "so does a heartbeat flush"
            );
        }
    }

    #[test]
    fn a_write_of_agents_that_ends_while_a_pass_leaves_them_out_still_asks_for_the_next() {
        let left_out = crate::Finding::default();
        let began = left_out.epoch();
        assert!(!left_out.undone(), "no pass has left agents out yet");
        assert!(
            !left_out.settle(began, true),
            "a write ended while the pass ran: the next pass is due at once"
        );
        assert!(!left_out.undone(), "and is not asked for twice");
        let began = left_out.epoch();
        assert!(
            left_out.settle(began, true),
            "no write ended while this pass ran"
        );
        assert!(left_out.undone(), "so the next write to end asks for it");
        assert!(!left_out.undone(), "once");
    }

    #[tokio::test]
    async fn a_queue_headed_by_tasks_no_agent_can_take_does_not_hide_one_that_fits() {
        let platform = platform();
        let operator = principal(Role::Operator);
        platform
            .register_agent(&operator, new_agent("worker", &["etl"]))
            .await
            .unwrap();
        // More tasks no agent can take than a fitted pass reads, all ahead of one that fits.
        let now = chrono::Utc::now();
        for _ in 0..PassSize::LEAST + 10 {
            let gpu = new_task("needs a gpu", 9, &["gpu"], now);
            platform.submit_task(&operator, gpu, None).await.unwrap();
        }
        let etl = new_task("fits", 1, &["etl"], now);
        let fits = platform.submit_task(&operator, etl, None).await.unwrap();

        assert_eq!(
            platform.run_scheduler().await.unwrap(),
            1,
            "the pass reads past the head to the first task an agent with a slot free can take"
        );
        let placed = platform.get_task(&operator, fits.id).await.unwrap();
        assert_eq!(placed.status, domain::TaskStatus::Assigned);
        assert_eq!(
            platform.run_scheduler().await.unwrap(),
            0,
            "nothing else fits"
        );
    }

    #[test]
    fn an_unranked_batch_gets_its_reasons_but_is_never_placed() {
        let now = chrono::Utc::now();
        let etl = testkit::builders::agent(1, "etl", &["etl"], now);
        let waiting = testkit::builders::task(2, 5, &["etl"], now);
        let mut full = etl.clone();
        full.max_concurrent_tasks = 1;
        let mut held = testkit::builders::task(3, 5, &["etl"], now);
        held.assign(full.id, now).unwrap();
        // Read while no slot was free: the tasks read learn why they wait.
        let snapshot = ports::SchedulingSnapshot {
            pending: vec![waiting.clone()],
            agents: vec![full],
            held: domain::scheduler::Held::of(&held).into_iter().collect(),
            asked: 64,
            unranked: true,
            ..Default::default()
        };
        let findings = std::sync::Mutex::new(super::Findings::default());
        let changes = super::decide(snapshot, now, &Default::default(), &findings);
        let found = findings.into_inner().unwrap();
        assert!(found.unranked && !found.rank_again);
        assert_eq!(changes.tasks.len(), 1);
        assert_eq!(changes.tasks[0].status, domain::TaskStatus::Pending);
        assert!(changes.tasks[0].pending_reason.is_some());
        // A slot freed after the slots were counted: the unranked batch is left for a pass
        // that ranks, not placed.
        let snapshot = ports::SchedulingSnapshot {
            pending: vec![waiting],
            agents: vec![etl],
            asked: 64,
            unranked: true,
            ..Default::default()
        };
        let findings = std::sync::Mutex::new(super::Findings::default());
        let changes = super::decide(snapshot, now, &Default::default(), &findings);
        let found = findings.into_inner().unwrap();
        assert!(found.rank_again && found.unranked);
        assert!(
            found.room_left,
            "the free slot is room: new tasks still wake the scheduler"
        );
        assert!(changes.tasks.is_empty() && changes.events.is_empty());
    }

    #[test]
    fn a_pass_that_left_agents_out_neither_takes_the_fleet_for_full_nor_says_why_tasks_wait() {
        let now = chrono::Utc::now();
        let etl = testkit::builders::agent(1, "etl", &["etl"], now);
        let needs_gpu = testkit::builders::task(2, 5, &["gpu"], now);
        for left_out in [0, 1] {
            let snapshot = ports::SchedulingSnapshot {
                pending: vec![needs_gpu.clone()],
                agents: vec![etl.clone()],
                asked: 64,
                left_out,
                ..Default::default()
            };
            let findings = std::sync::Mutex::new(super::Findings::default());
            let changes = super::decide(snapshot, now, &Default::default(), &findings);
            let findings = findings.into_inner().unwrap();
            assert!(findings.room_left, "the agent has a free slot either way");
            assert!(findings.slot_unfilled, "and the pass left it empty");
            assert_eq!(findings.left_out, left_out > 0);
            if left_out == 0 {
                let reason = changes.tasks[0].pending_reason.as_ref();
                assert!(
                    reason.is_some(),
                    "the whole fleet seen: why it waits is known"
                );
            } else {
                assert!(
                    changes.tasks.is_empty(),
                    "an agent left out may have the capability: no reason is written"
                );
            }
        }
        // A full agent seen while another was left out: the fleet is not taken for full.
        let mut full = etl.clone();
        full.max_concurrent_tasks = 1;
        let mut held = testkit::builders::task(3, 5, &["etl"], now);
        held.assign(full.id, now).unwrap();
        let snapshot = ports::SchedulingSnapshot {
            pending: vec![needs_gpu],
            agents: vec![full],
            held: domain::scheduler::Held::of(&held).into_iter().collect(),
            asked: 64,
            left_out: 1,
            ..Default::default()
        };
        let findings = std::sync::Mutex::new(super::Findings::default());
        super::decide(snapshot, now, &Default::default(), &findings);
        let findings = findings.into_inner().unwrap();
        assert!(findings.room_left);
        assert!(
            !findings.slot_unfilled,
            "the agent seen is full: agents left out do not make the next pass read wide"
        );
    }
}
