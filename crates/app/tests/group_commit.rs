//! Group commit: concurrent submissions share one write of the store, each still gets its own
//! answer, and a submission the store refuses fails alone, not its whole group.

mod common;

use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{Idempotency, Platform, Settings};
use chrono::Utc;
use common::CountingTasks;
use domain::Role;
use ports::TaskRepository;
use testkit::builders::{new_task, principal};

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
        tasks.writes() > 1,
        "the refused group was written again, one submission at a time"
    );
}
