//! The agent work protocol: an agent starts the tasks it was assigned, reports progress, and
//! completes or fails them, each call naming the attempt it is about; and it long-polls for work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use domain::{Agent, AgentId, Principal, Task, TaskId, TaskStatus};
use ports::TaskQuery;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use super::{calling_agent, transition_error, MAX_WAIT_SECONDS};
use crate::group::Group;
use crate::{AppError, Platform};

/// How long an agent found holding nothing is taken to hold nothing still, while no event about
/// it arrives (see [`Quiet`]); past it, its next look reads the store again.
const QUIET_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Most agents remembered as quiet; past it, the memory starts afresh.
const QUIET_AGENTS: usize = 100_000;

/// The long polls waiting on this replica, by agent: an event about an agent (an assignment
/// above all) wakes only that agent's.
#[derive(Debug, Default)]
pub(crate) struct Polls {
    /// Each waiting agent's bell, and how many of its polls wait on it.
    bells: Mutex<HashMap<AgentId, (Arc<Notify>, usize)>>,
    /// Agents known to hold nothing.
    quiet: Mutex<Quiet>,
    /// Whether this replica follows every replica's events (the `follow_events` job runs), so
    /// that what [`Quiet`] remembers is forgotten when it stops being true.
    following: std::sync::atomic::AtomicBool,
    /// Long polls waiting now.
    waiting: AtomicUsize,
    /// Rung whenever a long poll starts waiting.
    started: Notify,
}

/// The agents this replica found existing and holding no task, and when, so that an idle
/// agent's every long poll and heartbeat does not read the store again: every change to what an
/// agent holds comes with an event about it, and every event of every replica reaches this one
/// (through the bus, or the log when the bus missed it), so an agent is forgotten here at the
/// first event about it, and every agent when events may have been missed. Remembered only for
/// [`QUIET_FOR`], and only while this replica follows the events.
#[derive(Debug, Default)]
struct Quiet {
    since: HashMap<AgentId, tokio::time::Instant>,
    /// Agents as last read or written here, and when: what a heartbeat that changes nothing
    /// but the time answers with (see `Platform::agent_heartbeat`).
    agents: HashMap<AgentId, (tokio::time::Instant, Agent)>,
    /// Moves at every event, so that a look that began before one cannot leave the agent
    /// remembered as quiet after it.
    epoch: u64,
}

/// Inserts into a memory of agents bounded by [`QUIET_AGENTS`]: past it, it starts afresh.
fn insert_capped<V>(memory: &mut HashMap<AgentId, V>, agent: AgentId, value: V) {
    if memory.len() >= QUIET_AGENTS {
        memory.clear();
    }
    memory.insert(agent, value);
}

impl Polls {
    /// Wakes the polls of each agent named, and forgets that they were quiet.
    pub(crate) fn wake(&self, agents: impl IntoIterator<Item = AgentId>) {
        let bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        quiet.epoch += 1;
        for agent in agents {
            quiet.since.remove(&agent);
            quiet.agents.remove(&agent);
            if let Some((bell, _)) = bells.get(&agent) {
                bell.notify_waiters();
            }
        }
    }

    /// Wakes every waiting poll, to read again, and forgets every quiet agent: for when
    /// assignments may have been missed.
    pub(crate) fn wake_all(&self) {
        let bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        quiet.epoch += 1;
        quiet.since.clear();
        quiet.agents.clear();
        for (bell, _) in bells.values() {
            bell.notify_waiters();
        }
    }

    /// Whether `agent` is known to exist and hold nothing.
    fn is_quiet(&self, agent: AgentId) -> bool {
        let quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        quiet
            .since
            .get(&agent)
            .is_some_and(|since| since.elapsed() < QUIET_FOR)
    }

    /// Where the events stand, as a look at an agent begins.
    pub(crate) fn epoch(&self) -> u64 {
        self.quiet
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// A look that began at `epoch` found `agent` existing and holding nothing.
    fn found_quiet(&self, agent: AgentId, epoch: u64) {
        self.remember(epoch, |quiet| {
            insert_capped(&mut quiet.since, agent, tokio::time::Instant::now());
        });
    }

    /// `agent` as this replica last read or wrote it, if no event about it came since.
    pub(crate) fn known_agent(&self, agent: AgentId) -> Option<Agent> {
        let quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        quiet
            .agents
            .get(&agent)
            .filter(|(since, _)| since.elapsed() < QUIET_FOR)
            .map(|(_, agent)| agent.clone())
    }

    /// A look (or write) that began at `epoch` found `agent` as it is.
    pub(crate) fn found_agent(&self, agent: &Agent, epoch: u64) {
        self.remember(epoch, |quiet| {
            let found = (tokio::time::Instant::now(), agent.clone());
            insert_capped(&mut quiet.agents, agent.id, found);
        });
    }

    /// Records what a look that began at `epoch` found, unless an event came meanwhile or this
    /// replica does not follow the events (then nothing it found can be vouched for).
    fn remember(&self, epoch: u64, found: impl FnOnce(&mut Quiet)) {
        if !self.following.load(Ordering::SeqCst) {
            return;
        }
        let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        if quiet.epoch == epoch {
            found(&mut quiet);
        }
    }

    /// Whether this replica follows every replica's events from now on; when it stops, every
    /// quiet agent is forgotten.
    pub(crate) fn follow(&self, following: bool) {
        self.following.store(following, Ordering::SeqCst);
        if !following {
            self.wake_all();
        }
    }

    /// Whether any poll waits now.
    pub(crate) fn any_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// The bell of `agent`, rung by its assignments for as long as the guard lives.
    fn listen(&self, agent: AgentId) -> Listening<'_> {
        let mut bells = self.bells.lock().unwrap_or_else(PoisonError::into_inner);
        let (bell, polls) = bells.entry(agent).or_default();
        *polls += 1;
        Listening {
            polls: self,
            agent,
            bell: bell.clone(),
        }
    }
}

/// One long poll listening for its agent's assignments; it stops when dropped, also when the
/// request is abandoned.
struct Listening<'a> {
    polls: &'a Polls,
    agent: AgentId,
    bell: Arc<Notify>,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let mut bells = self
            .polls
            .bells
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, polls)) = bells.get_mut(&self.agent) {
            *polls -= 1;
            if *polls == 0 {
                bells.remove(&self.agent);
            }
        }
    }
}

/// Counts a poll as waiting while it lives.
struct Waiting<'a>(&'a Polls);

impl<'a> Waiting<'a> {
    fn start(polls: &'a Polls) -> Self {
        polls.waiting.fetch_add(1, Ordering::SeqCst);
        polls.started.notify_waiters();
        Self(polls)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Platform {
    /// How many agents' long polls are waiting for an assignment on this replica now.
    pub fn long_polls_waiting(&self) -> usize {
        self.signals.polls.waiting.load(Ordering::SeqCst)
    }

    /// Resolves once at least `count` long polls are waiting on this replica: a readiness
    /// signal for whoever must act only after agents are listening.
    pub async fn until_long_polls_waiting(&self, count: usize) {
        loop {
            let started = self.signals.polls.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if self.long_polls_waiting() >= count {
                return;
            }
            started.await;
        }
    }

    /// Wakes the long polls of the agents events are about (assignments, and every other
    /// change to their tasks), whichever replica made them.
    pub(crate) fn wake_polls(&self, about: impl IntoIterator<Item = Option<AgentId>>) {
        self.signals.polls.wake(about.into_iter().flatten());
    }

    /// Wakes every long poll waiting on this replica, to read again.
    pub(crate) fn wake_all_polls(&self) {
        self.signals.polls.wake_all();
    }

    /// Whether any long poll waits on this replica now.
    pub(crate) fn polls_waiting(&self) -> bool {
        self.signals.polls.any_waiting()
    }

    /// The tasks `agent` holds, as [`held_tasks`](Self::held_tasks) reads them, but without a
    /// read when this replica knows the agent exists and holds nothing (see `Quiet`); a read
    /// that finds nothing is remembered so. With them, whether the agent is known to exist.
    pub(crate) async fn held_tasks_known(
        &self,
        agent: AgentId,
    ) -> Result<(Vec<Task>, bool), AppError> {
        let polls = &self.signals.polls;
        if polls.is_quiet(agent) {
            return Ok((Vec::new(), true));
        }
        let epoch = polls.epoch();
        let held = self.held_tasks(agent).await?;
        if !held.is_empty() {
            return Ok((held, true));
        }
        if !polls.following.load(Ordering::SeqCst) {
            return Ok((held, false));
        }
        let found = self
            .deps
            .agents
            .get(agent)
            .await
            .map_err(|e| AppError::from_repo("Agent", e))?;
        polls.found_quiet(agent, epoch);
        polls.found_agent(&found, epoch);
        Ok((held, true))
    }

    /// Whether this replica follows every replica's events (see `Quiet`).
    pub(crate) fn follow_events_from_now(&self, following: bool) {
        self.signals.polls.follow(following);
    }

    /// The agent starts the task it was assigned.
    pub async fn start_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
    ) -> Result<Task, AppError> {
        self.report_one(actor, id, attempt, ReportKind::Start).await
    }

    /// The agent reports it is alive and how far along; the lease is renewed. The returned
    /// task's `cancel_requested` tells the agent whether to stop.
    pub async fn task_heartbeat(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        progress: Option<f64>,
        message: Option<String>,
    ) -> Result<Task, AppError> {
        let kind = ReportKind::Heartbeat { progress, message };
        self.report_one(actor, id, attempt, kind).await
    }

    /// The agent finished the task.
    pub async fn complete_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        result: Map<String, Value>,
    ) -> Result<Task, AppError> {
        self.report_one(actor, id, attempt, ReportKind::Complete { result })
            .await
    }

    /// The agent gave up on the task.
    pub async fn fail_task(
        &self,
        actor: &Principal,
        id: TaskId,
        attempt: u32,
        error: &str,
        retryable: bool,
    ) -> Result<Task, AppError> {
        let kind = ReportKind::Fail {
            error: error.to_owned(),
            retryable,
        };
        self.report_one(actor, id, attempt, kind).await
    }

    /// An agent's tasks, optionally of one status. With `wait`, waits up to that long
    /// (at most [`MAX_WAIT_SECONDS`]) until at least one matches.
    pub async fn agent_tasks(
        &self,
        actor: &Principal,
        agent: AgentId,
        status: Option<TaskStatus>,
        wait: Option<std::time::Duration>,
    ) -> Result<Vec<Task>, AppError> {
        if !actor.can_see_agent(agent) {
            return Err(AppError::NotFound("Agent"));
        }
        // Whether the agent is known to exist: it is when it has tasks; otherwise it is looked
        // up once (`NotFound` for an unknown agent).
        let mut exists = false;
        let wait = wait
            .unwrap_or_default()
            .min(std::time::Duration::from_secs(u64::from(MAX_WAIT_SECONDS)));
        let deadline = tokio::time::Instant::now() + wait;
        let listening = self.signals.polls.listen(agent);
        loop {
            // Listening before the read, so an assignment made in between still wakes us.
            let assigned = listening.bell.notified();
            tokio::pin!(assigned);
            assigned.as_mut().enable();
            let tasks = match status {
                // Without a filter: the work it holds now, not its whole past; a long poll
                // takes what this replica knows of an idle agent (see `Quiet`).
                None if !wait.is_zero() => {
                    let (held, known) = self.held_tasks_known(agent).await?;
                    exists |= known;
                    held
                }
                None => self.held_tasks(agent).await?,
                Some(status) => {
                    let query = TaskQuery {
                        status: Some(status),
                        agent: Some(agent),
                        limit: 1000,
                        ..TaskQuery::default()
                    };
                    self.deps
                        .tasks
                        .list(&query)
                        .await
                        .map_err(|e| AppError::from_repo("Task", e))?
                }
            };
            if tasks.is_empty() && !exists {
                self.deps
                    .agents
                    .get(agent)
                    .await
                    .map_err(|e| AppError::from_repo("Agent", e))?;
                exists = true;
            }
            let now = tokio::time::Instant::now();
            if !tasks.is_empty() || now >= deadline {
                return Ok(tasks);
            }
            // Woken by events about this agent (its assignments first), made on this replica
            // or (through the bus or the log, see `follow_events`) on another; it reads again
            // only then.
            let _waiting = Waiting::start(&self.signals.polls);
            let _ = tokio::time::timeout(deadline - now, assigned).await;
        }
    }
}

/// Most reports one call may carry.
pub const MAX_REPORTS: usize = 1000;

/// What an agent reports about one of its tasks: the per-task calls, as data.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportKind {
    Start,
    Heartbeat {
        progress: Option<f64>,
        message: Option<String>,
    },
    Complete {
        result: Map<String, Value>,
    },
    Fail {
        error: String,
        retryable: bool,
    },
}

/// One report: about which task, on which attempt, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub task: TaskId,
    pub attempt: u32,
    pub kind: ReportKind,
}

impl Report {
    /// Applies the report to `task`, as the per-task call would.
    fn apply(
        &self,
        task: &mut Task,
        agent: AgentId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<domain::task::Outcome, domain::task::TaskError> {
        match &self.kind {
            ReportKind::Start => task.start(agent, self.attempt, now),
            ReportKind::Heartbeat { progress, .. } => {
                task.heartbeat(agent, self.attempt, *progress, now)
            }
            ReportKind::Complete { result } => {
                task.complete(agent, self.attempt, result.clone(), now)
            }
            ReportKind::Fail { error, retryable } => {
                task.fail(agent, self.attempt, error, *retryable, now)
            }
        }
    }

    /// Whether the report ends the attempt.
    fn ends(&self) -> bool {
        matches!(
            self.kind,
            ReportKind::Complete { .. } | ReportKind::Fail { .. }
        )
    }

    /// Whether `error`, refusing this report on `task` as it was read, means the report came
    /// late: an earlier attempt ending after the task moved on, recorded as a detected state
    /// inconsistency (as the per-task calls do).
    fn is_late(&self, task: &Task, error: &domain::task::TaskError) -> bool {
        self.ends()
            && self.attempt < task.attempt
            && matches!(error, domain::task::TaskError::Stale(_))
    }

    fn note(&self) -> Option<(&'static str, Value)> {
        match &self.kind {
            ReportKind::Heartbeat {
                message: Some(m), ..
            } => Some(("message", Value::String(m.clone()))),
            _ => None,
        }
    }
}

/// What the decision on an agent's reports found, for the caller once it is written.
#[derive(Debug, Default)]
pub(crate) struct Decided {
    /// Each report's answer, in order.
    answers: Vec<Result<Task, AppError>>,
    /// The reports refused as late: an earlier attempt ending after the task moved on.
    late: Vec<usize>,
    /// Tasks the write changed.
    changed: Vec<TaskId>,
    /// Pools that ended attempts claim and the decision was not told of: it wrote nothing,
    /// and is taken again with them.
    unknown_pools: Vec<String>,
}

/// One agent's reports, waiting to be written with other agents'.
#[derive(Debug)]
pub(crate) struct Filed {
    agent: AgentId,
    reports: Vec<Report>,
}

/// Agents' reports waiting for the next group commit (see [`crate::group`]): each answered
/// with what the decision on it found, or `NotFound` when its agent is gone.
pub(crate) type Filing = Group<Arc<Filed>, Result<Decided, AppError>>;

/// Most reports one group commit writes; a call larger than this (none is) still goes whole,
/// alone.
const GROUP_REPORTS: usize = 2 * MAX_REPORTS;

/// Applies an agent's reports, in order, to the agent and the tasks they name as loaded (both
/// changed in place, so the reports of the next agent in the group see them); what it changes
/// goes into `changes` (all but the tasks, listed in `decided.changed`), what it found into
/// `decided`.
fn decide_reports(
    reports: &[Report],
    holder: &mut Agent,
    tasks: &mut HashMap<TaskId, Task>,
    pools: &HashMap<String, Option<domain::Resource>>,
    now: chrono::DateTime<chrono::Utc>,
    changes: &mut ports::Changes,
    decided: &mut Decided,
) {
    for (i, report) in reports.iter().enumerate() {
        let Some(task) = tasks.get_mut(&report.task) else {
            decided.answers.push(Err(AppError::NotFound("Task")));
            continue;
        };
        let before = task.clone();
        let outcome = match report.apply(task, holder.id, now) {
            Ok(outcome) => outcome,
            Err(e) => {
                *task = before;
                if report.is_late(task, &e) {
                    decided.late.push(i);
                }
                decided.answers.push(Err(transition_error(e)));
                continue;
            }
        };
        if *task != before {
            let transition = super::Transition {
                before: &before,
                task,
                outcome,
                note: report.note(),
                now,
            };
            if transition.releases() {
                let unknown = task
                    .resource_claims
                    .iter()
                    .filter(|c| !pools.contains_key(&c.resource))
                    .map(|c| c.resource.clone());
                decided.unknown_pools.extend(unknown);
            }
            super::record_transition(transition, Some(holder), pools, changes);
            if !decided.changed.contains(&task.id) {
                decided.changed.push(task.id);
            }
        }
        decided.answers.push(Ok(task.clone()));
    }
}

/// Applies a group's reports, agent after agent in the order they were filed, to the agents
/// and tasks as loaded, and returns the changes to write; what it found for each filing goes
/// into `decided`. Nothing is written when a filing met pools the decision was not told of.
fn decide_group(
    filed: &[Arc<Filed>],
    agents: Vec<Agent>,
    tasks: Vec<Task>,
    pools: &HashMap<String, Option<domain::Resource>>,
    now: chrono::DateTime<chrono::Utc>,
    decided: &mut Vec<Result<Decided, AppError>>,
) -> ports::Changes {
    let mut agents: HashMap<AgentId, Agent> = agents.into_iter().map(|a| (a.id, a)).collect();
    let mut tasks: HashMap<TaskId, Task> = tasks.into_iter().map(|t| (t.id, t)).collect();
    let mut changes = ports::Changes::default();
    let mut changed: Vec<TaskId> = Vec::new();
    decided.clear();
    for filing in filed {
        let Some(holder) = agents.get_mut(&filing.agent) else {
            decided.push(Err(AppError::NotFound("Agent")));
            continue;
        };
        let mut found = Decided::default();
        decide_reports(
            &filing.reports,
            holder,
            &mut tasks,
            pools,
            now,
            &mut changes,
            &mut found,
        );
        for id in &found.changed {
            if !changed.contains(id) {
                changed.push(*id);
            }
        }
        decided.push(Ok(found));
    }
    let unknown = decided
        .iter()
        .flatten()
        .any(|d| !d.unknown_pools.is_empty());
    if unknown {
        return ports::Changes::default();
    }
    changes.tasks = changed.iter().filter_map(|id| tasks.remove(id)).collect();
    changes
}

impl Platform {
    /// Several reports of one agent about its tasks, applied in order and written in one
    /// transaction (shared with the reports other agents make meanwhile, see [`Filing`]), with
    /// the agent and the tasks locked meanwhile (so they never lose a race to a scheduling pass
    /// or another report): what `start`, `heartbeat`, `complete` and `fail` do one task at a
    /// time, and how they do it. Each report is answered on its own, as its per-task call
    /// would be (a stale attempt is `409`, changes nothing, and a late end is recorded as a
    /// detected conflict); one refused report does not stop the others.
    pub async fn report(
        &self,
        actor: &Principal,
        agent: AgentId,
        reports: Vec<Report>,
    ) -> Result<Vec<Result<Task, AppError>>, AppError> {
        if calling_agent(actor)? != agent {
            return Err(AppError::Forbidden(
                "an agent reports only on its own tasks".into(),
            ));
        }
        if reports.is_empty() || reports.len() > MAX_REPORTS {
            return Err(AppError::Validation(domain::ValidationErrors::single(
                "reports",
                format!("must hold 1 to {MAX_REPORTS} reports"),
            )));
        }
        let filed = Arc::new(Filed { agent, reports });
        let platform = self.clone();
        let decided = self
            .signals
            .reports
            .join(filed.clone(), async move { platform.write_reports().await })
            .await
            .unwrap_or_else(|| Err(AppError::Internal("the group commit stopped".into())))?;
        for &i in &decided.late {
            let late = &filed.reports[i];
            self.detect_stale_report(agent, late.task, late.attempt)
                .await;
        }
        if filed.reports.iter().any(Report::ends) {
            self.wake_for_room(); // freed capacity may place a waiting task
        }
        let mut answers = decided.answers;
        // Each written task's version moved by one.
        for answer in answers.iter_mut().flatten() {
            if decided.changed.contains(&answer.id) {
                answer.version += 1;
            }
        }
        Ok(answers)
    }

    /// Writes the next group of reports in one transaction, publishes its events, and answers
    /// each filing.
    async fn write_reports(&self) {
        let (turn, group) = self
            .signals
            .reports
            .next(|queue| crate::group::take_up_to(queue, GROUP_REPORTS, |f| f.reports.len()))
            .await;
        if group.is_empty() {
            return;
        }
        let (filed, replies): (Vec<Arc<Filed>>, Vec<_>) =
            group.into_iter().map(|m| (m.item, m.reply)).unzip();
        let written = self.decide_and_write(Arc::new(filed)).await;
        // The next group may be written while this one's events are published.
        drop(turn);
        self.agents_released();
        match written {
            Ok((stored, decided)) => {
                self.publish(&stored).await;
                for (reply, found) in replies.into_iter().zip(decided) {
                    reply.answer(found);
                }
            }
            Err(e) => {
                for reply in replies {
                    reply.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Locks the filings' agents and named tasks, decides on them and writes the changes, in
    /// one transaction; taken again on fresh rows when it lost a race, and again with the
    /// pools ended attempts claim once they are known.
    async fn decide_and_write(
        &self,
        filed: Arc<Vec<Arc<Filed>>>,
    ) -> Result<(Vec<domain::NewEvent>, Vec<Result<Decided, AppError>>), AppError> {
        let mut agents: Vec<AgentId> = filed.iter().map(|f| f.agent).collect();
        agents.sort();
        agents.dedup();
        let mut ids: Vec<TaskId> = filed
            .iter()
            .flat_map(|f| f.reports.iter().map(|r| r.task))
            .collect();
        ids.sort();
        ids.dedup();
        let mut pools = HashMap::new();
        loop {
            let decided = Arc::new(Mutex::new(Vec::new()));
            let stored = crate::until_won("agent's tasks", || async {
                let now = self.deps.clock.now();
                let (into, with, known) = (decided.clone(), filed.clone(), pools.clone());
                let written = self
                    .deps
                    .tasks
                    .update_with_agents(
                        &agents,
                        &ids,
                        Box::new(move |holders, tasks| {
                            let mut decided = into.lock().unwrap_or_else(PoisonError::into_inner);
                            decide_group(&with, holders, tasks, &known, now, &mut decided)
                        }),
                    )
                    .await;
                crate::Attempt::of(written).map_err(|e| AppError::from_repo("Agent", e))
            })
            .await?;
            let decided =
                std::mem::take(&mut *decided.lock().unwrap_or_else(PoisonError::into_inner));
            let unknown: Vec<&str> = decided
                .iter()
                .flatten()
                .flat_map(|d| d.unknown_pools.iter().map(String::as_str))
                .collect();
            if unknown.is_empty() {
                return Ok((stored, decided));
            }
            // Claims never change: once their pools are known, the next decision writes.
            pools.extend(self.pools_named(unknown).await?);
        }
    }

    /// One report, as a per-task call makes it: answered with the task, or refused.
    async fn report_one(
        &self,
        actor: &Principal,
        task: TaskId,
        attempt: u32,
        kind: ReportKind,
    ) -> Result<Task, AppError> {
        let agent = calling_agent(actor)?;
        let report = Report {
            task,
            attempt,
            kind,
        };
        self.report(actor, agent, vec![report])
            .await?
            .pop()
            .unwrap_or_else(|| Err(AppError::Internal("a report went unanswered".into())))
    }
}
