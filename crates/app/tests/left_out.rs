//! A scheduling pass that left agents out (another write held their rows) is followed by
//! another once a write of agents ends, not only by the periodic pass: a task such a pass
//! could not place waits for the agents' next write, no longer.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{spawn_background_jobs, Platform, Settings};
use domain::{AgentId, Role, Task, TaskId, TaskStatus};
use testkit::builders::{agent_principal, new_agent, new_task, principal};

async fn submit(platform: &Platform) -> Task {
    let new = new_task("work", 5, &["etl"], chrono::Utc::now());
    platform
        .submit_task(&principal(Role::Operator), new, None)
        .await
        .unwrap()
}

/// The agent's long poll for assigned tasks (answered at once if it has some): their IDs, or
/// none if ten seconds of the test's clock pass first.
async fn assigned(platform: &Platform, agent: AgentId) -> Vec<TaskId> {
    let wait = Some(Duration::from_secs(10));
    let found = platform
        .agent_tasks(
            &agent_principal(agent),
            agent,
            Some(TaskStatus::Assigned),
            wait,
        )
        .await
        .unwrap();
    found.iter().map(|t| t.id).collect()
}

/// Lets every task run until all wait: with the clock paused, a sleep ends only once nothing
/// else can run, and only timers due within it fire.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
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
    assert_eq!(
        assigned(&platform, agent).await,
        [first.id],
        "a submission wakes a pass that places it"
    );

    // The passes that come find the agent held by another write, and leave it out.
    tasks.leave_out.store(true, SeqCst);
    let second = submit(&platform).await;
    tokio::time::timeout(Duration::from_secs(10), tasks.left_out_pass.notified())
        .await
        .expect("the submission wakes a pass");
    settle().await;
    let second = platform
        .get_task(&principal(Role::Operator), second.id)
        .await
        .unwrap();
    assert_eq!(
        second.status,
        TaskStatus::Pending,
        "with the scheduler idle, the task waits: a pass that sees no agent places nothing"
    );
    tasks.leave_out.store(false, SeqCst);

    // The agent's next write (its start of the first task) wakes the pass that places it.
    platform
        .start_task(&agent_principal(agent), first.id, 1)
        .await
        .unwrap();
    assert_eq!(
        assigned(&platform, agent).await,
        [second.id],
        "the write of the agent a pass left out wakes the next pass"
    );
    jobs.shutdown().await;
}
