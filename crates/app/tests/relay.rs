//! One relay in flight per replica: concurrent writes share relays instead of each numbering
//! the log in turn, and every event is still numbered before its write returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use async_trait::async_trait;
use domain::{Event, Role, TaskId};
use ports::{EventLog, RepoError};
use testkit::builders::{new_task, principal};

/// The store's log, counting how often it is asked to number events; each numbering takes a
/// while, as a database round trip would.
struct CountingLog {
    inner: Arc<MemoryStore>,
    sequenced: AtomicUsize,
    /// Whether numbering fails, as when the database is away.
    failing: bool,
}

#[async_trait]
impl EventLog for CountingLog {
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.sequenced.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.failing {
            return Err(RepoError::Unavailable("the log is away".into()));
        }
        self.inner.sequence(limit).await
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
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_relays_and_every_event_is_numbered_before_they_return() {
    let store = Arc::new(MemoryStore::new());
    let log = counting(&store, false);
    let platform = platform_with(&store, &log);
    let operator = principal(Role::Operator);
    let writes: Vec<_> = (0..50)
        .map(|n| {
            let (platform, operator) = (platform.clone(), operator.clone());
            tokio::spawn(async move {
                let new = new_task(&format!("task-{n}"), 5, &[], chrono::Utc::now());
                let task = platform.submit_task(&operator, new, None).await.unwrap();
                // Returned: its event is numbered already.
                let history = platform.task_history(&operator, task.id).await.unwrap();
                assert!(
                    !history.is_empty(),
                    "task {n}'s event was numbered before it returned"
                );
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    assert!(
        store.sequence(1000).await.unwrap().is_empty(),
        "every event was numbered by the writes themselves"
    );
    let numbered = store.events_after(0, 1000).await.unwrap();
    assert_eq!(numbered.len(), 50);
    assert!(numbered.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let relays = log.sequenced.load(Ordering::SeqCst);
    assert!(
        relays < 10,
        "50 concurrent writes took {relays} numberings; they should share a few relays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_numbering_fails_the_writes_still_succeed_and_do_not_retry_in_turn() {
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
    for write in writes {
        assert!(
            write.await.unwrap().is_ok(),
            "a committed write is acknowledged"
        );
    }
    let attempts = log.sequenced.load(Ordering::SeqCst);
    assert!(
        attempts < 10,
        "30 writes tried numbering {attempts} times; those waiting on a failed relay should not"
    );
    // Nothing is lost: the events wait in the log for the background relay.
    assert_eq!(store.sequence(1000).await.unwrap().len(), 30);
}
