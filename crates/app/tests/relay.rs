//! One relay in flight per replica: concurrent writes share relays instead of each publishing
//! in turn, and every event is still published before its write returns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use async_trait::async_trait;
use domain::{Event, Role, TaskId};
use ports::{EventLog, RepoError};
use testkit::builders::{new_task, principal};
use tokio::sync::Notify;

/// The store's log, counting how often it is asked to hand events over. A hand-over waits at a gate
/// the test opens, as a database round trip would take a while: the writes that commit
/// meanwhile queue behind the relay in flight.
struct CountingLog {
    inner: Arc<MemoryStore>,
    sequenced: AtomicUsize,
    /// Whether handing over fails, as when the database is away.
    failing: bool,
    /// Rung when a relay reaches the log.
    entered: Notify,
    open: AtomicBool,
    opened: Notify,
}

impl CountingLog {
    /// Lets every hand-over through, now and from now on.
    fn open_gate(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Counts a hand-over and holds it at the gate until the gate opens.
    async fn through_gate(&self) -> Result<(), RepoError> {
        self.sequenced.fetch_add(1, Ordering::SeqCst);
        self.entered.notify_one();
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.open.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
        if self.failing {
            return Err(RepoError::Unavailable("the log is away".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl EventLog for CountingLog {
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.through_gate().await?;
        self.inner.sequence(limit).await
    }
    async fn hand_over(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.through_gate().await?;
        self.inner.hand_over(limit).await
    }
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.inner.events_after(after_seq, limit).await
    }
    async fn task_events(&self, task: TaskId, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.inner.task_events(task, limit).await
    }
    async fn prune(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        keep: u64,
    ) -> Result<u64, RepoError> {
        self.inner.prune(before, keep).await
    }
    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.inner.latest_events(limit).await
    }
    async fn log_id(&self) -> Result<uuid::Uuid, RepoError> {
        self.inner.log_id().await
    }
}

/// A platform on the embedded store whose log is `log`.
fn platform_with(store: &Arc<MemoryStore>, log: &Arc<CountingLog>) -> Platform {
    let mut deps = Dependencies::on_store(
        store.clone(),
        Arc::new(MemoryBus::new()),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    deps.event_log = log.clone();
    Platform::new(deps, Settings::default())
}

fn counting(store: &Arc<MemoryStore>, failing: bool) -> Arc<CountingLog> {
    Arc::new(CountingLog {
        inner: store.clone(),
        sequenced: AtomicUsize::new(0),
        failing,
        entered: Notify::new(),
        open: AtomicBool::new(false),
        opened: Notify::new(),
    })
}

/// Waits until the first relay is held at the log's gate, lets the spawned writes (queued to
/// run before this task on the single-threaded test runtime) commit and queue behind it, then
/// opens the gate.
async fn hold_the_first_relay(log: &CountingLog) {
    tokio::time::timeout(Duration::from_secs(10), log.entered.notified())
        .await
        .expect("a relay reaches the log");
    tokio::task::yield_now().await;
    log.open_gate();
}

#[tokio::test]
async fn concurrent_writes_share_relays_and_every_event_is_published_before_they_return() {
    let store = Arc::new(MemoryStore::new());
    let log = counting(&store, false);
    let platform = platform_with(&store, &log);
    let operator = principal(Role::Operator);
    let writes: Vec<_> = (0..50)
        .map(|n| {
            let (platform, operator) = (platform.clone(), operator.clone());
            let mut published = platform.subscribe_events();
            tokio::spawn(async move {
                let new = new_task(&format!("task-{n}"), 5, &[], chrono::Utc::now());
                let task = platform.submit_task(&operator, new, None).await.unwrap();
                // Returned: its event is on the bus already.
                let mut seen = false;
                while let Ok(event) = published.try_recv() {
                    seen |= event.task_id == Some(task.id);
                }
                assert!(seen, "task {n}'s event was published before it returned");
            })
        })
        .collect();
    hold_the_first_relay(&log).await;
    for write in writes {
        write.await.unwrap();
    }
    assert!(
        store.sequence(1000).await.unwrap().is_empty(),
        "every event was handed over by the writes' relays"
    );
    let numbered = store.events_after(0, 1000).await.unwrap();
    assert_eq!(numbered.len(), 50);
    assert!(numbered.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let relays = log.sequenced.load(Ordering::SeqCst);
    assert!(
        relays < 10,
        "50 concurrent writes took {relays} hand-overs; they should share a few relays"
    );
}

#[tokio::test]
async fn when_the_relay_fails_the_writes_still_succeed_and_do_not_retry_in_turn() {
    let store = Arc::new(MemoryStore::new());
    let log = counting(&store, true);
    let platform = platform_with(&store, &log);
    let operator = principal(Role::Operator);
    let writes: Vec<_> = (0..30)
        .map(|n| {
            let (platform, operator) = (platform.clone(), operator.clone());
            tokio::spawn(async move {
                let new = new_task(&format!("task-{n}"), 5, &[], chrono::Utc::now());
                platform.submit_task(&operator, new, None).await
            })
        })
        .collect();
    hold_the_first_relay(&log).await;
    for write in writes {
        assert!(
            write.await.unwrap().is_ok(),
            "a committed write is acknowledged"
        );
    }
    let attempts = log.sequenced.load(Ordering::SeqCst);
    assert!(
        attempts < 10,
        "30 writes tried relaying {attempts} times; those waiting on a failed relay should not"
    );
    // Nothing is lost: the events wait in the log for the background relay.
    assert_eq!(store.sequence(1000).await.unwrap().len(), 30);
}
