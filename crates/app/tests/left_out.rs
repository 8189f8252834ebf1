//! A scheduling pass that left agents out (another write held their rows) is followed by
//! another once a write of agents ends, not only by the periodic pass: a task such a pass
//! could not place waits for the agents' next write, no longer.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{spawn_background_jobs, Platform, Settings};
use domain::{Role, Task, TaskId, TaskStatus};
use testkit::builders::{agent_principal, new_agent, new_task, principal};

async fn submit(platform: &Platform) -> Task {
    let new = new_task("work", 5, &["etl"], chrono::Utc::now());
    platform
        .submit_task(&principal(Role::Operator), new, None)
        .await
        .unwrap()
}

async fn status(platform: &Platform, id: TaskId) -> TaskStatus {
    let operator = principal(Role::Operator);
    platform.get_task(&operator, id).await.unwrap().status
}

/// Waits up to 10 s for `done`, checked every 10 ms; whether it came.
async fn within_10s<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) -> bool {
    for _ in 0..1000 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_pass_that_left_agents_out_is_followed_by_one_when_their_write_ends() {
    let store = Arc::new(MemoryStore::new());
    // The periodic pass runs once as the jobs start, before any task, and not again within the
    // test: only a wake-up can place a task.
    let settings = Settings {
        schedule_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (platform, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), settings);
    let jobs = spawn_background_jobs(platform.clone());
    let mut worker = new_agent("worker", &["etl"]);
    worker.max_concurrent_tasks = 4;
    let agent = platform
        .register_agent(&principal(Role::Operator), worker)
        .await
        .unwrap()
        .agent
        .id;
    let first = submit(&platform).await;
    assert!(
        within_10s(|| async { status(&platform, first.id).await == TaskStatus::Assigned }).await,
        "a submission wakes a pass that places it"
    );

    // The passes that come find the agent held by another write, and leave it out.
    tasks.leave_out.store(true, SeqCst);
    let second = submit(&platform).await;
    assert!(
        within_10s(|| async { tasks.left_out_passes.load(SeqCst) > 0 }).await,
        "the submission wakes a pass"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&platform, second.id).await,
        TaskStatus::Pending,
        "a pass that sees no agent places nothing"
    );
    let passes = tasks.passes.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        tasks.passes.load(SeqCst),
        passes,
        "the scheduler is quiet: nothing left to wake it"
    );
    tasks.leave_out.store(false, SeqCst);

    // The agent's next write (its start of the first task) wakes the pass that places it.
    platform
        .start_task(&agent_principal(agent), first.id, 1)
        .await
        .unwrap();
    assert!(
        within_10s(|| async { status(&platform, second.id).await == TaskStatus::Assigned }).await,
        "the write of the agent a pass left out wakes the next pass"
    );
    jobs.shutdown().await;
}
