//! Long polls: an assignment wakes only its own agent's poll, one made by another replica
//! wakes it through the bus, and waiting agents cost the store nothing while they wait.

mod common;

use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{spawn_background_jobs, Platform, Settings};
use domain::{AgentId, Role, Task};
use testkit::builders::{agent_principal, new_agent, new_task, principal};

async fn register(platform: &Platform, name: &str) -> AgentId {
    platform
        .register_agent(&principal(Role::Operator), new_agent(name, &[name]))
        .await
        .unwrap()
        .agent
        .id
}

/// Starts a long poll of `agent`'s assigned tasks, waiting up to `wait`.
fn poll(platform: &Platform, agent: AgentId, wait: Duration) -> tokio::task::JoinHandle<Vec<Task>> {
    let platform = platform.clone();
    tokio::spawn(async move {
        platform
            .agent_tasks(
                &agent_principal(agent),
                agent,
                Some(domain::TaskStatus::Assigned),
                Some(wait),
            )
            .await
            .unwrap()
    })
}

async fn submit(platform: &Platform, capability: &str) -> Task {
    let new = new_task("work", 5, &[capability], chrono::Utc::now());
    platform
        .submit_task(&principal(Role::Operator), new, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_assignment_wakes_only_its_own_agents_poll() {
    let store = Arc::new(MemoryStore::new());
    let settings = Settings {
        long_poll_recheck: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (platform, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), settings);
    let (gpu, cpu) = (
        register(&platform, "gpu").await,
        register(&platform, "cpu").await,
    );
    let gpu_poll = poll(&platform, gpu, Duration::from_secs(20));
    let cpu_poll = poll(&platform, cpu, Duration::from_secs(20));
    platform.until_long_polls_waiting(2).await;
    let reads = tasks.agent_reads();
    assert_eq!(reads, 2, "each poll read once");

    let task = submit(&platform, "gpu").await;
    assert_eq!(platform.run_scheduler().await.unwrap(), 1);
    let woken = tokio::time::timeout(Duration::from_secs(5), gpu_poll)
        .await
        .expect("the assignment wakes the gpu agent's poll")
        .unwrap();
    assert_eq!(
        woken.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![task.id]
    );
    assert_eq!(
        tasks.agent_reads(),
        reads + 1,
        "only the agent given work read again"
    );
    assert_eq!(
        platform.long_polls_waiting(),
        1,
        "the cpu agent still waits"
    );
    cpu_poll.abort();
}

#[tokio::test]
async fn an_assignment_made_by_another_replica_wakes_the_poll_through_the_bus() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let quiet = Settings {
        long_poll_recheck: Duration::from_secs(3600),
        schedule_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (here, _) = common::counting_platform(&store, &bus, quiet.clone());
    let (there, _) = common::counting_platform(&store, &bus, quiet);
    let jobs = spawn_background_jobs(here.clone());
    let agent = register(&here, "etl").await;
    let polled = poll(&here, agent, Duration::from_secs(20));
    here.until_long_polls_waiting(1).await;

    let task = submit(&there, "etl").await;
    assert_eq!(
        there.run_scheduler().await.unwrap(),
        1,
        "the other replica assigns"
    );
    let woken = tokio::time::timeout(Duration::from_secs(5), polled)
        .await
        .expect("the other replica's assignment wakes the poll")
        .unwrap();
    assert_eq!(
        woken.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![task.id]
    );
    jobs.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_agents_cost_the_store_nothing_while_they_wait() {
    let store = Arc::new(MemoryStore::new());
    let (platform, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), Settings::default());
    let jobs = spawn_background_jobs(platform.clone());
    let mut polls = Vec::new();
    for n in 0..40 {
        let agent = register(&platform, &format!("agent-{n}")).await;
        polls.push(poll(&platform, agent, Duration::from_secs(30)));
    }
    platform.until_long_polls_waiting(40).await;
    let reads = tasks.agent_reads();
    // Twenty-five seconds of waiting on the paused clock, moved by hand a second at a time,
    // during which the replica looks in its log every two seconds: once for all forty.
    for _ in 0..25 {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tasks.agent_reads(),
        reads,
        "no waiting poll read the store again"
    );
    assert_eq!(platform.long_polls_waiting(), 40);
    for poll in polls {
        assert!(
            poll.await.unwrap().is_empty(),
            "no work came: each answers empty"
        );
    }
    jobs.shutdown().await;
}

#[tokio::test]
async fn a_poll_for_running_tasks_wakes_when_its_agent_starts_one() {
    let store = Arc::new(MemoryStore::new());
    let settings = Settings {
        long_poll_recheck: Duration::from_secs(3600),
        ..Settings::default()
    };
    let (platform, _) = common::counting_platform(&store, &Arc::new(MemoryBus::new()), settings);
    let agent = register(&platform, "etl").await;
    let task = submit(&platform, "etl").await;
    assert_eq!(platform.run_scheduler().await.unwrap(), 1);
    let watching = {
        let platform = platform.clone();
        tokio::spawn(async move {
            let running = Some(domain::TaskStatus::Running);
            let me = agent_principal(agent);
            let wait = Some(Duration::from_secs(20));
            platform
                .agent_tasks(&me, agent, running, wait)
                .await
                .unwrap()
        })
    };
    platform.until_long_polls_waiting(1).await;
    platform
        .start_task(&agent_principal(agent), task.id, task.attempt)
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("the start wakes the poll")
        .unwrap();
    assert_eq!(
        woken.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![task.id]
    );
}

/// Looks at what `agent` holds as its own long poll does, waiting a moment.
async fn look(platform: &Platform, agent: AgentId) -> Vec<Task> {
    platform
        .agent_tasks(
            &agent_principal(agent),
            agent,
            None,
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_idle_agents_polls_and_heartbeats_read_nothing_until_an_event_about_it() {
    let store = Arc::new(MemoryStore::new());
    let (platform, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), Settings::default());
    let jobs = spawn_background_jobs(platform.clone());
    tokio::task::yield_now().await; // the jobs start following events
    let agent = register(&platform, "etl").await;
    let me = agent_principal(agent);
    assert!(look(&platform, agent).await.is_empty());
    let reads = tasks.agent_reads();
    for _ in 0..5 {
        assert!(look(&platform, agent).await.is_empty());
        let beat = platform
            .agent_heartbeat(&me, agent, None, None)
            .await
            .unwrap();
        assert!(beat.tasks.is_empty());
    }
    assert_eq!(
        tasks.agent_reads(),
        reads,
        "known to hold nothing: no look read"
    );

    // An assignment (the scheduler's, woken by the submission) is an event about the agent:
    // the next look reads, and finds it.
    let task = submit(&platform, "etl").await;
    let found = look(&platform, agent).await;
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [task.id]);
    let beat = platform
        .agent_heartbeat(&me, agent, None, None)
        .await
        .unwrap();
    assert_eq!(beat.tasks.len(), 1);
    platform
        .complete_task(&me, task.id, task.attempt + 1, Default::default())
        .await
        .unwrap_err(); // a stale attempt changes nothing
    platform
        .complete_task(&me, task.id, found[0].attempt, Default::default())
        .await
        .unwrap();
    assert!(look(&platform, agent).await.is_empty());

    // What is known lasts a while only: past it, a look reads again.
    let reads = tasks.agent_reads();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(look(&platform, agent).await.is_empty());
    assert_eq!(tasks.agent_reads(), reads + 1);
    jobs.shutdown().await;

    // A replica that does not follow every replica's events knows nothing: each look reads,
    // as it begins and again as its wait ends.
    let reads = tasks.agent_reads();
    for _ in 0..3 {
        assert!(look(&platform, agent).await.is_empty());
    }
    assert_eq!(tasks.agent_reads(), reads + 6);
}

#[tokio::test(start_paused = true)]
async fn events_the_bus_lost_make_a_replica_forget_what_it_knew_of_idle_agents() {
    let store = Arc::new(MemoryStore::new());
    let (here, tasks) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), Settings::default());
    // Another replica on the same store whose events never reach this one's bus, as when
    // Redis drops them.
    let (there, _) =
        common::counting_platform(&store, &Arc::new(MemoryBus::new()), Settings::default());
    let jobs = spawn_background_jobs(here.clone());
    tokio::task::yield_now().await; // the jobs start following events
    let agent = register(&here, "etl").await;
    assert!(look(&here, agent).await.is_empty());
    let reads = tasks.agent_reads();
    assert!(look(&here, agent).await.is_empty());
    assert_eq!(tasks.agent_reads(), reads, "known to hold nothing");

    let task = submit(&there, "etl").await;
    assert_eq!(there.run_scheduler().await.unwrap(), 1);
    // The next event this replica hears of is numbered past the lost ones.
    register(&here, "other").await;
    let found = look(&here, agent).await;
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [task.id]);
    jobs.shutdown().await;
}
