//! The use cases of the platform.
//!
//! Each use case loads what it needs through the ports, lets the domain decide, saves the
//! result together with its events in one repository call, and then publishes the committed
//! events on the bus. Object-level authorization (an agent acts only for itself) is checked
//! here, so no route can get around it.

mod agents;
mod auth;
mod background;
mod conflicts;
mod credentials;
mod error;
mod events;
mod feed;
mod group;
mod health;
mod limits;
mod metrics;
mod monitoring;
mod passwords;
mod replicas;
mod resources;
mod scheduling;
mod tasks;
mod workflows;

use std::sync::Arc;

use chrono::Duration;
use domain::KeyHash;
use ports::{
    AgentRepository, Clock, ConflictRepository, CredentialRepository, EventBus, EventLog,
    HealthCheck, IdGenerator, RateLimiter, ResourceRepository, Store, TaskRepository,
    WorkflowRepository,
};

pub use agents::{Beat, RegisteredAgent, HEARTBEAT_FLUSH};
pub use auth::{hash_key, new_api_key, KEY_RENEWAL, KEY_TRUST};
pub use background::{spawn_background_jobs, BackgroundJobs};
pub use conflicts::ResolveRequest;
pub use credentials::IssuedKey;
pub use error::AppError;
pub use feed::EventPage;
pub use health::HealthReport;
pub use limits::{address_key, caller_key, LocalRateLimiter};
pub use metrics::{Gauges, Metrics, Route, Status};
pub use monitoring::{AgentPerformance, PerformanceRange, Summary};
pub use replicas::{fingerprint, Disagreement, ANNOUNCE_EVERY};
pub use resources::{ResourceFilter, ResourceView};
pub use tasks::{
    Idempotency, Report, ReportKind, IDEMPOTENCY_WINDOW, MAX_BATCH_TASKS, MAX_REPORTS,
    MAX_WAIT_SECONDS,
};

/// Tunables of the use cases, read from configuration by the server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An agent whose last heartbeat is this old is marked offline.
    pub agent_offline_after: Duration,
    /// How often background jobs (offline detection) run.
    pub sweep_interval: std::time::Duration,
    /// Hash of the bootstrap `ADMIN_API_KEY`, if one is configured.
    pub admin_key: Option<KeyHash>,
    /// How the scheduler orders and places tasks.
    pub policy: domain::scheduler::Policy,
    /// How often the scheduler runs when nothing wakes it earlier.
    pub schedule_interval: std::time::Duration,
    /// Most pending tasks one scheduling pass considers.
    pub schedule_batch: u32,
    /// Groups of submissions written at once (each takes a database connection while it is
    /// written), so a large batch being written does not hold up the submissions after it.
    pub submission_writers: usize,
    /// Events older than this are deleted from the log...
    pub event_max_age: Duration,
    /// ...and so are all but this many of the newest.
    pub event_max_count: u64,
    /// Tasks that ended longer ago than this are deleted (a batch at a time, by the sweep).
    pub task_max_age: Duration,
    /// The strategy that resolves detected conflicts of each type on its own; types without
    /// one wait for an operator (or close themselves when their cause goes away).
    pub conflict_strategies: std::collections::BTreeMap<domain::ConflictType, domain::Strategy>,
    /// Whether reported conflicts are resolved by those strategies too (else operators do).
    pub auto_resolve_reported: bool,
    /// Requests per credential; `None` is no limit.
    pub rate_limit: Option<domain::limit::Rate>,
    /// Requests per address from callers without valid credentials, and (ten times this) store
    /// lookups of presented API keys per address; `None` is no limit.
    pub anonymous_rate_limit: Option<domain::limit::Rate>,
    /// Sign-in attempts per address and per username; `None` is no limit.
    pub login_rate_limit: Option<domain::limit::Rate>,
    /// Most password hashes (sign-in checks, new passwords) computed at once. Each takes about
    /// 19 MiB while it runs, so this bounds their memory; attempts past the bound and its short
    /// queue are refused before any hashing.
    pub password_hash_concurrency: usize,
    /// How often a replica with long polls waiting reads the event log for assignments its
    /// bus did not bring (Redis away, or another replica's notice lost): one read per replica,
    /// however many agents wait. Assignments the bus brings wake their agent's poll at once.
    pub long_poll_recheck: std::time::Duration,
    /// Fingerprints of the settings every replica must share (see [`fingerprint`]), by name:
    /// announced to the other replicas, which say when theirs differ.
    pub shared: std::collections::BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            agent_offline_after: Duration::seconds(90),
            sweep_interval: std::time::Duration::from_secs(5),
            admin_key: None,
            policy: domain::scheduler::Policy::default(),
            schedule_interval: std::time::Duration::from_secs(1),
            schedule_batch: 2000,
            submission_writers: 2,
            event_max_age: Duration::days(7),
            event_max_count: 1_000_000,
            task_max_age: Duration::days(30),
            conflict_strategies: default_conflict_strategies(),
            auto_resolve_reported: false,
            rate_limit: None,
            anonymous_rate_limit: None,
            login_rate_limit: None,
            password_hash_concurrency: 1,
            long_poll_recheck: std::time::Duration::from_secs(2),
            shared: std::collections::BTreeMap::new(),
        }
    }
}

/// Contention goes to `priority_based`, lost leases to `retry_with_backoff`; other types
/// wait for an operator.
pub fn default_conflict_strategies(
) -> std::collections::BTreeMap<domain::ConflictType, domain::Strategy> {
    use domain::{ConflictType, Strategy};
    std::collections::BTreeMap::from([
        (ConflictType::ResourceContention, Strategy::PriorityBased),
        (ConflictType::LeaseExpired, Strategy::RetryWithBackoff),
    ])
}

/// The adapters a platform runs on, chosen by the composition root.
#[derive(Clone)]
pub struct Dependencies {
    pub agents: Arc<dyn AgentRepository>,
    pub tasks: Arc<dyn TaskRepository>,
    pub resources: Arc<dyn ResourceRepository>,
    pub conflicts: Arc<dyn ConflictRepository>,
    pub credentials: Arc<dyn CredentialRepository>,
    pub workflows: Arc<dyn WorkflowRepository>,
    pub event_log: Arc<dyn EventLog>,
    pub bus: Arc<dyn EventBus>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
    /// Token buckets for rate limits: in process unless the composition root shares them.
    pub limiter: Arc<dyn RateLimiter>,
    /// Health of the store behind the repositories.
    pub store_health: Arc<dyn HealthCheck>,
    /// Where the replicas sharing the store announce their shared settings.
    pub replicas: Arc<dyn ports::ReplicaRegistry>,
}

impl Dependencies {
    /// Every repository port, and the store's health, on one store.
    pub fn on_store<S>(
        store: Arc<S>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self
    where
        S: Store + 'static,
    {
        Self {
            agents: store.clone(),
            tasks: store.clone(),
            resources: store.clone(),
            conflicts: store.clone(),
            credentials: store.clone(),
            workflows: store.clone(),
            event_log: store.clone(),
            store_health: store.clone(),
            replicas: store,
            bus,
            limiter: Arc::new(LocalRateLimiter::new(clock.clone())),
            clock,
            ids,
        }
    }
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies").finish_non_exhaustive()
    }
}

/// Wake-ups between use cases on this replica: new work for the scheduler, new assignments
/// for agents that are long-polling.
#[derive(Debug, Default)]
struct Signals {
    work: tokio::sync::Notify,
    /// Long polls waiting for assignments, each woken by its own agent's.
    polls: tasks::Polls,
    /// Whether the last scheduling pass left no serving agent a free slot: new tasks alone are
    /// not worth a pass until capacity frees up (or the periodic pass comes).
    room: Finding,
    /// Whether the next scheduling pass reads its whole batch rather than as many pending tasks
    /// as the free slots call for: the last one read all it asked for and still left a slot
    /// free, so tasks that fit no agent may fill the head of the queue.
    wide: std::sync::atomic::AtomicBool,
    /// Whether the last scheduling pass left out agents another write held: the next write of
    /// agents (a report group, a heartbeat flush) wakes a pass once it is done, and one that
    /// ended while the pass ran makes the pass ask for the next itself.
    left_out: Finding,
    relay: Relay,
    /// Submissions waiting to be committed together.
    intake: tasks::Intake,
    /// Agents' reports waiting to be committed together.
    reports: tasks::Filing,
    /// Heartbeats waiting to be written together.
    beats: agents::Beats,
}

/// A finding of the last scheduling pass that an event undoes, and how often the event has
/// happened: a pass that read the store before the event must not record what it found after
/// it. `room` holds whether the last pass left every agent full (capacity freed undoes it);
/// `left_out` whether it left out agents another write held (a write of agents ending undoes
/// it, and wakes the next pass).
#[derive(Debug, Default)]
struct Finding(std::sync::Mutex<(bool, u64)>);

impl Finding {
    fn state(&self) -> std::sync::MutexGuard<'_, (bool, u64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn holds(&self) -> bool {
        self.state().0
    }

    /// The event happened: the finding no longer holds. Returns whether it held.
    fn undone(&self) -> bool {
        let mut state = self.state();
        let held = state.0;
        *state = (false, state.1 + 1);
        held
    }

    /// Where the count of events stands, as a pass begins.
    fn epoch(&self) -> u64 {
        self.state().1
    }

    /// What a pass that began at `epoch` found, recorded unless the event happened since;
    /// returns whether it was.
    fn settle(&self, epoch: u64, holds: bool) -> bool {
        let mut state = self.state();
        let current = state.1 == epoch;
        if current {
            state.0 = holds;
        }
        current
    }
}

/// One relay in flight per replica. Every committed write asks for its events to be published;
/// writes that commit while a relay runs wait for the next one, which publishes theirs and every
/// other's at once, in `seq` order.
#[derive(Debug, Default)]
struct Relay {
    /// Held by the relay running now.
    turn: tokio::sync::Mutex<()>,
    /// Writes that have asked, counted from start-up.
    asked: std::sync::atomic::AtomicU64,
    /// Every write up to this count has had its events published by a relay that started after
    /// it committed.
    served: std::sync::atomic::AtomicU64,
    /// Every write up to this count was waiting when a relay failed; it is left to the
    /// background relay rather than failing again in turn.
    failed: std::sync::atomic::AtomicU64,
}

/// The platform's use cases, shared by every request handler and background job.
#[derive(Clone)]
pub struct Platform {
    deps: Dependencies,
    /// Shared, not copied: a platform is cloned for every request and background job.
    settings: Arc<Settings>,
    signals: Arc<Signals>,
    /// Whether an open contention conflict may exist, so passes without contention know
    /// whether to look for ones to close.
    contention_open: Arc<std::sync::atomic::AtomicBool>,
    /// Admission to password hashing: who may hash now, and who may wait for a turn.
    hashing: Arc<passwords::Hashing>,
    /// Stored API keys found valid lately.
    trusted_keys: Arc<auth::TrustedKeys>,
    /// What this replica counts, for `/metrics`.
    metrics: Arc<Metrics>,
    /// The last readings of the store's health and gauges, shared by callers close together.
    readings: Arc<health::Readings>,
    /// This replica, as it announces its settings (drawn at start-up).
    replica: uuid::Uuid,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a use case lets a caller do: read everything, or change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Change,
}

/// `Forbidden` unless `actor`'s role allows `access` to `what` ("role viewer may not change
/// tasks"): the one role check of the use cases that any reader or any operator may call.
pub(crate) fn require(
    actor: &domain::Principal,
    access: Access,
    what: &str,
) -> Result<(), AppError> {
    let (allowed, verb) = match access {
        Access::Read => (actor.can_read_all(), "read"),
        Access::Change => (actor.can_operate(), "change"),
    };
    if allowed {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "role {} may not {verb} {what}",
            actor.role
        )))
    }
}

/// How many times a change is tried when it keeps losing optimistic-concurrency races.
const MAX_ATTEMPTS: usize = 16;

/// How one optimistic attempt ended: its change stored, or lost to a concurrent writer.
pub(crate) enum Attempt<T> {
    Won(T),
    Lost,
}

impl<T> Attempt<T> {
    /// What a write over a read version means for the attempt: stored, lost the race
    /// (`RepoError::Conflict`, the row moved since it was read), or failed.
    pub(crate) fn of(written: Result<T, ports::RepoError>) -> Result<Self, ports::RepoError> {
        match written {
            Ok(stored) => Ok(Self::Won(stored)),
            Err(ports::RepoError::Conflict(_)) => Ok(Self::Lost),
            Err(e) => Err(e),
        }
    }
}

/// The one optimistic-concurrency loop every change goes through: `attempt` loads what it
/// changes, lets the domain decide, and writes over the versions it read; an attempt that lost
/// the race runs again on fresh rows. After [`MAX_ATTEMPTS`] lost races in a row the caller is
/// told `409`, try again, naming `what` was contended.
pub(crate) async fn until_won<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt<T>, AppError>>,
{
    for _ in 0..MAX_ATTEMPTS {
        if let Attempt::Won(value) = attempt().await? {
            return Ok(value);
        }
    }
    Err(AppError::Conflict(format!(
        "the {what} is being changed concurrently; try again"
    )))
}

/// One page of a list, and where the next starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<domain::Cursor>,
}

impl<T> Page<T> {
    /// Cuts rows read with a limit of `limit + 1` down to one page, and says where the next
    /// starts (the position of the page's last row) when there were more.
    pub(crate) fn of(
        mut rows: Vec<T>,
        limit: domain::Limit,
        position: impl Fn(&T) -> domain::Cursor,
    ) -> Self {
        let limit = limit.get() as usize;
        if rows.len() <= limit {
            return Self {
                items: rows,
                next: None,
            };
        }
        rows.truncate(limit);
        let next = rows.last().map(position);
        Self { items: rows, next }
    }

    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

impl Platform {
    pub fn new(deps: Dependencies, settings: Settings) -> Self {
        Self {
            signals: Arc::new(Signals {
                intake: tasks::Intake::new(settings.submission_writers),
                ..Signals::default()
            }),
            contention_open: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            hashing: Arc::new(passwords::Hashing::new(settings.password_hash_concurrency)),
            trusted_keys: Arc::default(),
            metrics: Arc::default(),
            readings: Arc::default(),
            replica: deps.ids.new_id(),
            deps,
            settings: Arc::new(settings),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What this replica counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The clock the platform runs on (tests move it by hand).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.deps.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_that_loses_a_race_runs_again_until_it_wins() {
        let mut tries = 0;
        let won = until_won("task", || {
            tries += 1;
            let this_try = tries;
            async move {
                let written = if this_try < 3 {
                    Err(ports::RepoError::Conflict("version moved".into()))
                } else {
                    Ok(this_try)
                };
                Attempt::of(written).map_err(|e| AppError::Internal(e.to_string()))
            }
        })
        .await;
        assert_eq!(won.ok(), Some(3));
    }

    #[tokio::test]
    async fn endless_lost_races_end_in_a_conflict_naming_what_was_contended() {
        let mut tries = 0;
        let result: Result<(), AppError> = until_won("resource pool", || {
            tries += 1;
            async { Ok(Attempt::Lost) }
        })
        .await;
        assert_eq!(tries, MAX_ATTEMPTS);
        match result {
            Err(AppError::Conflict(message)) => assert!(message.contains("resource pool")),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failure_that_is_not_a_lost_race_is_not_retried() {
        let mut tries = 0;
        let result: Result<(), AppError> = until_won("agent", || {
            tries += 1;
            async {
                Attempt::of(Err(ports::RepoError::NotFound))
                    .map_err(|e| AppError::from_repo("Agent", e))
            }
        })
        .await;
        assert_eq!(tries, 1);
        assert!(matches!(result, Err(AppError::NotFound(_))));
    }
}
