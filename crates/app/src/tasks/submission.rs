//! Submitting tasks, one at a time or in batches, idempotently; and the group commit every
//! submission goes through: those that arrive while a group is being written are written
//! together next, in one transaction, so concurrent requests share their commits.

use std::collections::{HashSet, VecDeque};

use domain::{NewTask, Principal, Task, TaskId, TaskInput, ValidationErrors};
use ports::{IdempotencyRecord, RepoError, Submission};
use sha2::Digest;

use crate::group::{Group, Member};
use crate::{events, AppError, Platform};

/// How long an `Idempotency-Key` is honoured.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Most tasks one `POST /tasks/batch` may hold.
pub const MAX_BATCH_TASKS: usize = 1000;

/// Most tasks one group commit writes; a submission larger than this (none is) still goes
/// whole, alone.
const GROUP_TASKS: usize = 2 * MAX_BATCH_TASKS;

/// A client's `Idempotency-Key` and a digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

impl Idempotency {
    /// Checks the key (1..=255 visible ASCII characters) and digests the request body.
    pub fn new(key: &str, body: &[u8]) -> Result<Self, String> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters".into());
        }
        Ok(Self {
            key: key.to_owned(),
            fingerprint: hex::encode(sha2::Sha256::digest(body)),
        })
    }
}

/// Submissions waiting for the next group commit (see [`crate::group`]), and the
/// `Idempotency-Key`s of the groups being written now: a submission carrying one waits until
/// that group is written, so groups written at once never race for a key (which would make
/// the store refuse one of them whole).
#[derive(Debug)]
pub(crate) struct Intake {
    group: Group<Queued, Result<(), RepoError>>,
    keys_in_flight: std::sync::Mutex<HashSet<String>>,
}

impl Intake {
    /// Up to `writers` groups written at once.
    pub fn new(writers: usize) -> Self {
        Self {
            group: Group::new(writers),
            keys_in_flight: std::sync::Mutex::default(),
        }
    }

    fn keys_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.keys_in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Intake {
    fn default() -> Self {
        Self::new(1)
    }
}

/// A submission waiting for its group.
#[derive(Debug)]
pub(crate) struct Queued {
    submission: Submission,
    /// Held back from a group that carried its key: it goes alone, so that if it finds the
    /// key taken only it is refused (and answered as a replay).
    alone: bool,
}

/// The submissions waiting longest, as many as fit in one group (at least one, unless all that
/// wait are held back). One whose `Idempotency-Key` another in the group carries, or a group
/// being written now (`in_flight`: a client retrying a request still in flight), is held back
/// and later written alone, once that group is written, where it finds the key taken, instead
/// of making the store refuse a whole group. The group's keys are added to `in_flight`.
fn next_group(
    queue: &mut VecDeque<Member<Queued, Result<(), RepoError>>>,
    in_flight: &mut HashSet<String>,
) -> Vec<Member<Queued, Result<(), RepoError>>> {
    let mut group: Vec<Member<Queued, _>> = Vec::new();
    let mut held_back = VecDeque::new();
    let mut tasks = 0;
    while let Some(mut next) = queue.pop_front() {
        let key = next.item.submission.idempotency.as_ref().map(|r| &r.key);
        if key.is_some_and(|key| in_flight.contains(key)) {
            next.item.alone = true;
            held_back.push_back(next);
            continue;
        }
        if next.item.alone {
            if group.is_empty() {
                group.push(next);
                break;
            }
            held_back.push_back(next);
            continue;
        }
        let size = next.item.submission.tasks.len();
        if !group.is_empty() && tasks + size > GROUP_TASKS {
            queue.push_front(next);
            break;
        }
        let key = next.item.submission.idempotency.as_ref().map(|r| &r.key);
        let repeated = key.is_some_and(|key| {
            group
                .iter()
                .any(|m| m.item.submission.idempotency.as_ref().map(|r| &r.key) == Some(key))
        });
        if repeated {
            next.item.alone = true;
            held_back.push_back(next);
            continue;
        }
        tasks += size;
        group.push(next);
    }
    // Held back in their order, ahead of what arrived after them.
    while let Some(waiting) = held_back.pop_back() {
        queue.push_front(waiting);
    }
    in_flight.extend(group.iter().filter_map(|m| key_of(&m.item)));
    group
}

/// The `Idempotency-Key` a queued submission carries, if any.
fn key_of(queued: &Queued) -> Option<String> {
    queued
        .submission
        .idempotency
        .as_ref()
        .map(|r| r.key.clone())
}

impl Platform {
    /// A client's submission: with an `Idempotency-Key`, the task an earlier submission with
    /// the key created when the key is live and the body the same (a validation error if the
    /// body differs), checked before the body is validated again, so a replay answers as the
    /// original did even once, say, its deadline has passed; otherwise the input is validated
    /// and the task submitted.
    pub async fn submit(
        &self,
        actor: &Principal,
        input: TaskInput,
        idempotency: Option<Idempotency>,
    ) -> Result<Task, AppError> {
        first(
            self.submit_inputs(actor, vec![input], idempotency, false)
                .await?,
        )
    }

    /// A client's batch: every task or none, in the order given, answered like
    /// [`submit`](Self::submit) (an `Idempotency-Key` covers the whole batch). A batch with
    /// invalid items is refused naming each by index (`tasks[3].priority`), and stores
    /// nothing.
    pub async fn submit_batch(
        &self,
        actor: &Principal,
        inputs: Vec<TaskInput>,
        idempotency: Option<Idempotency>,
    ) -> Result<Vec<Task>, AppError> {
        if inputs.is_empty() || inputs.len() > MAX_BATCH_TASKS {
            return Err(AppError::Validation(ValidationErrors::single(
                "tasks",
                format!("must hold 1 to {MAX_BATCH_TASKS} tasks"),
            )));
        }
        self.submit_inputs(actor, inputs, idempotency, true).await
    }

    /// Submits a task and wakes the scheduler. With an `Idempotency-Key` seen in the last 24 h
    /// from the same caller, returns the task that key created instead (the same body), or
    /// refuses (a different body).
    pub async fn submit_task(
        &self,
        actor: &Principal,
        new: NewTask,
        idempotency: Option<Idempotency>,
    ) -> Result<Task, AppError> {
        let record = self.record(actor, 1, idempotency)?;
        if let Some(tasks) = self.replay(record.as_ref()).await? {
            return first(tasks);
        }
        let stored = self
            .store_checked(vec![(0, new)], ValidationErrors::default(), record, false)
            .await?;
        first(stored)
    }

    /// [`submit`](Self::submit) of one input, or of a `batch`: replayed, else validated (each
    /// error named by its item's index in a batch), then stored.
    async fn submit_inputs(
        &self,
        actor: &Principal,
        inputs: Vec<TaskInput>,
        idempotency: Option<Idempotency>,
        batch: bool,
    ) -> Result<Vec<Task>, AppError> {
        let record = self.record(actor, inputs.len(), idempotency)?;
        if let Some(tasks) = self.replay(record.as_ref()).await? {
            return Ok(tasks);
        }
        let now = self.deps.clock.now();
        let mut errors = ValidationErrors::default();
        let mut news = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            match NewTask::parse(input, now) {
                Ok(new) => news.push((i, new)),
                Err(e) => errors.0.extend(in_item(batch, i, e).0),
            }
        }
        self.store_checked(news, errors, record, batch).await
    }

    /// The idempotency record of a caller's submission of `count` tasks, their IDs chosen
    /// now. `Forbidden` unless the caller may submit.
    fn record(
        &self,
        actor: &Principal,
        count: usize,
        idempotency: Option<Idempotency>,
    ) -> Result<Option<IdempotencyRecord>, AppError> {
        if !actor.can_operate() {
            return Err(AppError::Forbidden(format!(
                "role {} may not submit tasks",
                actor.role
            )));
        }
        Ok(idempotency.map(|i| IdempotencyRecord {
            key: scoped_key(actor, &i.key),
            fingerprint: i.fingerprint,
            tasks: (0..count).map(|_| TaskId(self.deps.ids.new_id())).collect(),
            created_at: self.deps.clock.now(),
        }))
    }

    /// Adds to `errors` what is wrong with each item's resource claims (each named by its
    /// index in a `batch`), reading each pool they name once.
    async fn check_all_claims(
        &self,
        items: &[(usize, NewTask)],
        batch: bool,
        errors: &mut ValidationErrors,
    ) -> Result<(), AppError> {
        let mut named: Vec<&str> = Vec::new();
        for (_, new) in items {
            named.extend(new.resource_claims.iter().map(|c| c.resource.as_str()));
        }
        let pools = self.pools_named(named).await?;
        for (i, new) in items {
            let found = crate::resources::claim_errors(new, &pools);
            errors.0.extend(in_item(batch, *i, found).0);
        }
        Ok(())
    }

    /// Refuses the submission if `errors` or the items' claims say so; otherwise stores it.
    async fn store_checked(
        &self,
        items: Vec<(usize, NewTask)>,
        mut errors: ValidationErrors,
        record: Option<IdempotencyRecord>,
        batch: bool,
    ) -> Result<Vec<Task>, AppError> {
        self.check_all_claims(&items, batch, &mut errors).await?;
        errors.into_result()?;
        self.store_new(items.into_iter().map(|(_, new)| new).collect(), record)
            .await
    }

    /// Stores checked tasks through the group commit and returns them; when their key was
    /// taken a moment ago by a concurrent request, answers as its replay.
    async fn store_new(
        &self,
        news: Vec<NewTask>,
        record: Option<IdempotencyRecord>,
    ) -> Result<Vec<Task>, AppError> {
        let now = self.deps.clock.now();
        let tasks: Vec<Task> = news
            .into_iter()
            .enumerate()
            .map(|(i, new)| {
                let id = record
                    .as_ref()
                    .map_or_else(|| TaskId(self.deps.ids.new_id()), |r| r.tasks[i]);
                Task::submit(new, id, now)
            })
            .collect();
        let submission = Submission {
            events: tasks.iter().map(events::task_submitted).collect(),
            tasks,
            idempotency: record.clone(),
        };
        let tasks = submission.tasks.clone();
        match (self.commit_submission(submission).await, &record) {
            (Ok(()), _) => Ok(tasks),
            // The same key won a race a moment ago: answer as if this were the replay.
            (Err(RepoError::Conflict(_)), Some(_)) => {
                self.replay(record.as_ref()).await?.ok_or_else(|| {
                    AppError::Conflict("the Idempotency-Key is in use; try again".into())
                })
            }
            (Err(e), _) => Err(AppError::from_repo("Task", e)),
        }
    }

    /// The tasks an earlier request with this record's key created, if the key is live and
    /// the request's body was the same; a validation error if it differed.
    async fn replay(
        &self,
        record: Option<&IdempotencyRecord>,
    ) -> Result<Option<Vec<Task>>, AppError> {
        let Some(record) = record else {
            return Ok(None);
        };
        let since = self.deps.clock.now() - IDEMPOTENCY_WINDOW;
        let found = self
            .deps
            .tasks
            .find_idempotency(&record.key, since)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?;
        match found {
            None => Ok(None),
            Some(earlier) if earlier.fingerprint == record.fingerprint => self
                .deps
                .tasks
                .get_many(&earlier.tasks)
                .await
                .map(Some)
                .map_err(|e| AppError::from_repo("Task", e)),
            Some(_) => Err(AppError::Validation(ValidationErrors::single(
                "Idempotency-Key",
                "was already used with a different request body",
            ))),
        }
    }

    /// Deletes a batch of the tasks that ended longer ago than the retention allows (the
    /// oldest first); returns how many. The sweep calls it every tick, so a backlog drains a
    /// batch at a time without holding the database.
    pub async fn purge_ended_tasks(&self) -> Result<u64, AppError> {
        const BATCH: u32 = 10_000;
        let before = self.deps.clock.now() - self.settings.task_max_age;
        self.deps
            .tasks
            .purge_ended(before, BATCH)
            .await
            .map_err(|e| AppError::from_repo("Task", e))
    }

    /// Forgets `Idempotency-Key`s older than their 24 h window. Returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, AppError> {
        let before = self.deps.clock.now() - IDEMPOTENCY_WINDOW;
        self.deps
            .tasks
            .purge_idempotency(before)
            .await
            .map_err(|e| AppError::from_repo("Task", e))
    }

    /// Commits a submission with every other one waiting (see [`Intake`]), publishes their
    /// events and wakes the scheduler; returns once all that is done, or with why this
    /// submission was not stored.
    async fn commit_submission(&self, submission: Submission) -> Result<(), RepoError> {
        let platform = self.clone();
        let queued = Queued {
            submission,
            alone: false,
        };
        self.signals
            .intake
            .group
            .join(queued, async move { platform.write_group().await })
            .await
            .unwrap_or_else(|| Err(RepoError::Internal("the group commit stopped".into())))
    }

    /// A writer of the next group, as a future of a known type (`write_group` starts one).
    fn another_writer(self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.write_group().await })
    }

    /// Writes the next group in one transaction. When it is refused as a `Conflict` (one
    /// submission's key or ID is taken), each of its submissions is written alone, so only
    /// the one at fault fails.
    async fn write_group(&self) {
        let intake = &self.signals.intake;
        let (turn, group) = intake
            .group
            .next(|queue| next_group(queue, &mut intake.keys_in_flight()))
            .await;
        if group.is_empty() {
            return;
        }
        let keys: Vec<String> = group.iter().filter_map(|m| key_of(&m.item)).collect();
        let (submissions, replies): (Vec<Submission>, Vec<_>) = group
            .into_iter()
            .map(|m| (m.item.submission, m.reply))
            .unzip();
        let tasks = &self.deps.tasks;
        let mut written = Vec::new();
        let outcomes = match tasks.insert_all(&submissions, IDEMPOTENCY_WINDOW).await {
            Ok(events) => {
                written = events;
                vec![Ok(()); submissions.len()]
            }
            Err(RepoError::Conflict(_)) if submissions.len() > 1 => {
                let mut outcomes = Vec::with_capacity(submissions.len());
                for submission in &submissions {
                    let alone = tasks
                        .insert_all(std::slice::from_ref(submission), IDEMPOTENCY_WINDOW)
                        .await;
                    outcomes.push(alone.map(|events| written.extend(events)));
                }
                outcomes
            }
            Err(e) => vec![Err(e); submissions.len()],
        };
        // The next group may be written while this one's events are published.
        drop(turn);
        if !keys.is_empty() {
            let mut in_flight = intake.keys_in_flight();
            for key in &keys {
                in_flight.remove(key);
            }
            drop(in_flight);
            // Submissions held back for these keys may have found no writer left to take them.
            if intake.group.is_waiting() {
                tokio::spawn(self.clone().another_writer());
            }
        }
        if !written.is_empty() {
            self.publish(&written).await;
            self.wake_for_work();
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            reply.answer(outcome);
        }
    }
}

/// The only task of a single submission.
fn first(tasks: Vec<Task>) -> Result<Task, AppError> {
    tasks
        .into_iter()
        .next()
        .ok_or_else(|| AppError::Internal("a submission stored no task".into()))
}

/// A batch item's errors, each named by the item's index (`tasks[3].priority`); a single
/// submission's, as they are.
fn in_item(batch: bool, index: usize, mut errors: ValidationErrors) -> ValidationErrors {
    if batch {
        for error in &mut errors.0 {
            error.field = format!("tasks[{index}].{}", error.field);
        }
    }
    errors
}

/// An `Idempotency-Key` as stored: scoped to the caller, so two clients can never collide.
fn scoped_key(actor: &Principal, key: &str) -> String {
    format!("{}:{key}", actor.subject)
}
