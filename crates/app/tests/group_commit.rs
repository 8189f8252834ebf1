//! Group commit: concurrent submissions share one write of the store, each still gets its own
//! answer, and a submission the store refuses fails alone, not its whole group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
use app::{Dependencies, Idempotency, Platform, Settings};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, NewEvent, Role, Task, TaskId};
use ports::{
    Changes, Decide, IdempotencyRecord, RepoError, Submission, TaskCounts, TaskQuery,
    TaskRepository,
};
use testkit::builders::{new_task, principal};

/// The store's tasks, counting the writes of new ones.
struct CountingTasks {
    inner: Arc<MemoryStore>,
    writes: AtomicUsize,
}

#[async_trait]
impl TaskRepository for CountingTasks {
    async fn insert_all(
        &self,
        submissions: &[Submission],
        key_lifetime: chrono::Duration,
    ) -> Result<Vec<NewEvent>, RepoError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_all(submissions, key_lifetime).await
    }
    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        self.inner.find_idempotency(key, since).await
    }
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        self.inner.purge_idempotency(before).await
    }
    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError> {
        self.inner.get_many(ids).await
    }
    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        self.inner.list(query).await
    }
    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        self.inner.save(changes).await
    }
    async fn schedule(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        self.inner.schedule(now, limit, policy, decide).await
    }
    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.lease_expired(now, limit).await
    }
    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.past_deadline(now, limit).await
    }
    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        self.inner.held_by(agent).await
    }
    async fn count_by_status(&self) -> Result<TaskCounts, RepoError> {
        self.inner.count_by_status().await
    }
    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        self.inner.waiting_for_capabilities(limit).await
    }
}

fn platform() -> (Platform, Arc<CountingTasks>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let tasks = Arc::new(CountingTasks {
        inner: store.clone(),
        writes: AtomicUsize::new(0),
    });
    let mut deps = Dependencies::on_store(
        store.clone(),
        Arc::new(MemoryBus::new()),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    deps.tasks = tasks.clone();
    (Platform::new(deps, Settings::default()), tasks, store)
}

#[tokio::test]
async fn concurrent_submissions_share_writes_and_each_gets_its_own_task() {
    let (platform, tasks, store) = platform();
    let operator = principal(Role::Operator);
    let submissions: Vec<_> = (0..50)
        .map(|n| {
            let (platform, operator) = (platform.clone(), operator.clone());
            tokio::spawn(async move {
                let new = new_task(&format!("task-{n}"), 5, &[], Utc::now());
                platform.submit_task(&operator, new, None).await.unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for (n, submission) in submissions.into_iter().enumerate() {
        let task = submission.await.unwrap();
        assert_eq!(
            task.title,
            format!("task-{n}"),
            "each gets its own task back"
        );
        ids.insert(task.id);
        // Returned: stored, and its event numbered.
        assert_eq!(store.get(task.id).await.unwrap().id, task.id);
        assert!(!platform
            .task_history(&operator, task.id)
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(ids.len(), 50);
    let writes = tasks.writes.load(Ordering::SeqCst);
    assert!(
        writes < 10,
        "50 concurrent submissions took {writes} writes; they should share a few"
    );
}

#[tokio::test]
async fn a_submission_the_store_refuses_fails_alone_and_the_rest_of_its_group_is_stored() {
    let (platform, tasks, store) = platform();
    let operator = principal(Role::Operator);
    // Two requests race with one new key (and one body): they meet in one group, which the
    // store refuses; written alone, the first wins and the second answers as its replay.
    let keyed = Idempotency::new("order-7", b"the same body").unwrap();
    let submissions: Vec<_> = (0..12)
        .map(|n| {
            let (platform, operator) = (platform.clone(), operator.clone());
            let key = (n % 6 == 0).then(|| keyed.clone());
            tokio::spawn(async move {
                let new = new_task(&format!("task-{n}"), 5, &[], Utc::now());
                platform.submit_task(&operator, new, key).await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for submission in submissions {
        answers.push(submission.await.unwrap());
    }
    assert_eq!(
        answers[6].id, answers[0].id,
        "the key's loser gets the winner's task"
    );
    assert_eq!(answers[6].title, "task-0");
    let stored = store.count_by_status().await.unwrap().pending;
    assert_eq!(stored, 11, "every other submission of the group is stored");
    assert!(
        tasks.writes.load(Ordering::SeqCst) > 1,
        "the refused group was written again, one submission at a time"
    );
}
