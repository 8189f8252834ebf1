//! Group commit: concurrent submissions share one write of the store, each still gets its own
//! answer, and a submission the store refuses fails alone, not its whole group.

mod common;

use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{Idempotency, Platform, Report, ReportKind, Settings};
use chrono::Utc;
use common::CountingTasks;
use domain::{Role, Task};
use ports::TaskRepository;
use testkit::builders::{new_task, principal};
use tokio::task::JoinHandle;

fn platform() -> (Platform, Arc<CountingTasks>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let (platform, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), Settings::default());
    (platform, tasks, store)
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
    let writes = tasks.writes();
    assert!(
        writes < 10,
        "50 concurrent submissions took {writes} writes; they should share a few"
    );
}

/// A platform whose writes of new tasks wait at a gate the test opens, `writers` groups at a
/// time.
fn gated_with(writers: usize) -> (Arc<MemoryStore>, Platform, Arc<CountingTasks>) {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let settings = Settings {
        submission_writers: writers,
        ..Settings::default()
    };
    let (platform, tasks) = common::gated_platform(&store, &bus, settings, false);
    (store, platform, tasks)
}

/// [`gated_with`] one writer: groups are written strictly one after another.
fn gated() -> (Arc<MemoryStore>, Platform, Arc<CountingTasks>) {
    gated_with(1)
}

/// An operator submits task `n`, with `key`, as a request of its own.
fn submit(platform: &Platform, n: usize, key: Option<Idempotency>) -> JoinHandle<Task> {
    let platform = platform.clone();
    tokio::spawn(async move {
        let new = new_task(&format!("task-{n}"), 5, &[], Utc::now());
        let operator = principal(Role::Operator);
        platform.submit_task(&operator, new, key).await.unwrap()
    })
}

#[tokio::test]
async fn a_group_is_written_while_another_still_is() {
    // By default two groups are written at once: a large batch being written does not hold up
    // the submissions after it.
    let writers = Settings::default().submission_writers;
    assert_eq!(writers, 2);
    let (store, platform, tasks) = gated_with(writers);
    let first = submit(&platform, 0, None);
    tokio::time::timeout(std::time::Duration::from_secs(5), tasks.at_gate.notified())
        .await
        .expect("the first group is being written");
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        submit(&platform, 1, None),
    )
    .await
    .expect("the second group is written while the first still is")
    .unwrap();
    assert_eq!(store.get(second.id).await.unwrap().title, "task-1");
    tasks.open_gate();
    let first = first.await.unwrap();
    assert_eq!(store.get(first.id).await.unwrap().title, "task-0");
    assert_eq!(tasks.writes(), 2);
}

#[tokio::test]
async fn a_retry_of_a_request_being_written_waits_for_it_while_other_groups_go_ahead() {
    // Two writers: the retry must not race its original's group for the key (one of the two
    // groups would be refused whole), yet the submissions after it need not wait.
    let (store, platform, tasks) = gated_with(2);
    let keyed = Idempotency::new("order-9", b"the same body").unwrap();
    let original = submit(&platform, 0, Some(keyed.clone()));
    tokio::time::timeout(std::time::Duration::from_secs(5), tasks.at_gate.notified())
        .await
        .expect("the original's group is being written");
    let retry = submit(&platform, 1, Some(keyed));
    let others: Vec<_> = (2..12).map(|n| submit(&platform, n, None)).collect();
    for other in others {
        let stored = tokio::time::timeout(std::time::Duration::from_secs(5), other)
            .await
            .expect("the others are written while the original still is")
            .unwrap();
        assert_eq!(store.get(stored.id).await.unwrap().id, stored.id);
    }
    assert!(!retry.is_finished(), "the retry waits for its original");
    tasks.open_gate();
    let original = original.await.unwrap();
    let retry = retry.await.unwrap();
    assert_eq!(retry.id, original.id, "the retry gets the original's task");
    assert_eq!(retry.title, "task-0");
    assert_eq!(store.count_by_status().await.unwrap().pending, 11);
    // The original; the others together; the retry alone, which finds the key taken.
    assert_eq!(tasks.writes(), 3);
}

#[tokio::test]
async fn a_submission_the_store_refuses_fails_alone_and_the_rest_of_its_group_is_stored() {
    let (store, platform, tasks) = gated();
    let submit = |n, key| submit(&platform, n, key);
    // A request with a new key is being written (held at the gate) when its client retries it,
    // with the same key and body, among ten other requests: they make the next group.
    let keyed = Idempotency::new("order-7", b"the same body").unwrap();
    let original = submit(0, Some(keyed.clone()));
    tokio::time::timeout(std::time::Duration::from_secs(5), tasks.at_gate.notified())
        .await
        .expect("the first group is being written");
    let retry = submit(1, Some(keyed));
    let others: Vec<_> = (2..12).map(|n| submit(n, None)).collect();
    for _ in 0..10 {
        tokio::task::yield_now().await; // every request queues behind the write in flight
    }
    tasks.open_gate();
    let original = original.await.unwrap();
    let retry = retry.await.unwrap();
    assert_eq!(retry.id, original.id, "the retry gets the original's task");
    assert_eq!(retry.title, "task-0");
    for other in others {
        let stored = other.await.unwrap();
        assert_eq!(store.get(stored.id).await.unwrap().id, stored.id);
    }
    assert_eq!(store.count_by_status().await.unwrap().pending, 11);
    // The first group; the second, refused for its taken key; then each of its eleven alone.
    assert_eq!(tasks.writes(), 13);
}

#[tokio::test]
async fn a_retry_queued_with_its_original_waits_for_the_next_group_instead_of_breaking_this_one() {
    let (store, platform, tasks) = gated();
    let submit = |n, key| submit(&platform, n, key);
    let first = submit(0, None);
    tokio::time::timeout(std::time::Duration::from_secs(5), tasks.at_gate.notified())
        .await
        .expect("the first group is being written");
    // A request and its retry (one key, one body) queue together, among five others.
    let keyed = Idempotency::new("order-8", b"the same body").unwrap();
    let original = submit(1, Some(keyed.clone()));
    let retry = submit(2, Some(keyed));
    let others: Vec<_> = (3..8).map(|n| submit(n, None)).collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tasks.open_gate();
    first.await.unwrap();
    let original = original.await.unwrap();
    assert_eq!(retry.await.unwrap().id, original.id);
    for other in others {
        other.await.unwrap();
    }
    assert_eq!(store.count_by_status().await.unwrap().pending, 7);
    // The first group; the original with the five others; the retry alone, refused and
    // answered as a replay. Not a refused group written again one request at a time.
    assert_eq!(tasks.writes(), 3);
}

#[tokio::test]
async fn concurrent_reports_of_many_agents_share_writes_and_each_is_answered_on_its_own() {
    let (platform, tasks, store) = platform();
    let operator = principal(Role::Operator);
    let mut agents = Vec::new();
    for n in 0..20 {
        let new = testkit::builders::new_agent(&format!("worker-{n}"), &[]);
        agents.push(platform.register_agent(&operator, new).await.unwrap().agent);
    }
    for n in 0..40 {
        let new = new_task(&format!("task-{n}"), 5, &[], Utc::now());
        platform.submit_task(&operator, new, None).await.unwrap();
    }
    assert_eq!(platform.run_scheduler().await.unwrap(), 40);
    // Every agent completes what it holds, each in a request of its own; one also reports on a
    // task it does not hold, and one was deregistered before its report.
    let stranger = platform.held_tasks(agents[1].id).await.unwrap()[0].clone();
    let gone = agents.pop().unwrap();
    let gone_held = platform.held_tasks(gone.id).await.unwrap();
    let mut reports_of = std::collections::HashMap::new();
    for agent in agents.iter().chain([&gone]) {
        reports_of.insert(agent.id, platform.held_tasks(agent.id).await.unwrap());
    }
    platform.deregister_agent(&operator, gone.id).await.unwrap();
    let writes_before = tasks
        .report_writes
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut calls = Vec::new();
    for agent in agents.iter().chain([&gone]) {
        let mut reports: Vec<Report> = reports_of[&agent.id]
            .iter()
            .map(|t| Report {
                task: t.id,
                attempt: t.attempt,
                kind: ReportKind::Complete {
                    result: Default::default(),
                },
            })
            .collect();
        if agent.id == agents[0].id {
            reports.push(Report {
                task: stranger.id,
                attempt: stranger.attempt,
                kind: ReportKind::Start,
            });
        }
        let (platform, id) = (platform.clone(), agent.id);
        calls.push(tokio::spawn(async move {
            let me = testkit::builders::agent_principal(id);
            platform.report(&me, id, reports).await
        }));
    }
    let mut answered = Vec::new();
    for call in calls {
        answered.push(call.await.unwrap());
    }
    assert_eq!(
        answered.pop().unwrap().map(|_| ()),
        Err(app::AppError::NotFound("Agent")),
        "the deregistered agent's report, alone"
    );
    for (n, answers) in answered.into_iter().enumerate() {
        let answers = answers.unwrap();
        let (done, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(Result::is_ok);
        assert_eq!(done.len(), 2, "agent {n} completed both its tasks");
        for task in done {
            let task = task.unwrap();
            assert_eq!(task.status, domain::TaskStatus::Completed);
            assert_eq!(store.get(task.id).await.unwrap().version, task.version);
        }
        let expected = usize::from(n == 0);
        assert_eq!(refused.len(), expected, "only the report on another's task");
    }
    assert_eq!(
        store.count_by_status().await.unwrap().completed,
        38,
        "all but the deregistered agent's, which went back to the queue"
    );
    for task in gone_held {
        let now = store.get(task.id).await.unwrap();
        assert_eq!(now.status, domain::TaskStatus::Pending);
    }
    let writes = tasks
        .report_writes
        .load(std::sync::atomic::Ordering::SeqCst)
        - writes_before;
    assert!(
        writes < 5,
        "20 concurrent reports took {writes} writes; they should share a few"
    );
}
